//! Email delivered to a real SMTP server (aiosmtpd): plain, and STARTTLS with AUTH.
use std::{sync::Arc, time::Duration};

use warden_core::{
    clock::{Clock, SystemClock},
    history::Severity,
};
use warden_notify::{
    ChannelConfig, DeliveryState, DispatcherSettings, ReceiverConfig, RetryPolicy, Secret,
    config::{EmailConfig, SmtpTls},
};

use crate::support::*;

fn email(name: &str, port: u16, tls: SmtpTls) -> EmailConfig {
    let _ = name;
    EmailConfig {
        host: "127.0.0.1".into(),
        port,
        tls,
        username: None,
        password: None,
        from: "Warden <warden@example.com>".into(),
        to: vec!["oncall@example.com".into(), "lead@example.com".into()],
        ca_file: None,
    }
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server() {
    let mut smtp = SmtpSink::start(None, None).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let configs = [ReceiverConfig {
        name: "mail".into(),
        channel: ChannelConfig::Email(email("mail", smtp.port, SmtpTls::None)),
        retry: None,
    }];
    let (d, _cancel) = dispatcher(
        &configs,
        RetryPolicy::default(),
        clock.clone(),
        DispatcherSettings::default(),
    );
    let now = clock.now();
    let n = notification(
        "mail",
        vec![
            alert("a1", "worker_lost", Severity::Critical, "w-1", now),
            alert("a2", "worker_lost", Severity::Warning, "w-2", now),
        ],
    );
    let id = d.dispatch(n);
    let done = wait_final(&d, id, Duration::from_secs(15)).await;
    assert_eq!(done.state, DeliveryState::Sent, "{done:?}");

    let mail = smtp.next_mail().await;
    assert_eq!(mail.mail_from, "warden@example.com");
    assert_eq!(
        mail.rcpt_tos,
        vec!["oncall@example.com", "lead@example.com"]
    );
    assert_eq!(
        mail.subject,
        "[FIRING] critical: 2 alerts — 2 alerts: worker_lost"
    );
    assert!(mail.from.contains("warden@example.com"), "{}", mail.from);
    assert!(
        mail.to.contains("oncall@example.com") && mail.to.contains("lead@example.com"),
        "{}",
        mail.to
    );
    let body = mail.body.expect("a text/plain body").replace("\r\n", "\n");
    assert!(
        body.starts_with("2 alert(s) firing for receiver mail.\n"),
        "{body}"
    );
    assert!(body.contains("Common labels: group=payments"), "{body}");
    assert!(
        body.contains("[CRITICAL] worker_lost — Worker w-1 lost (firing)"),
        "{body}"
    );
    assert!(
        body.contains("[WARNING] worker_lost — Worker w-2 lost (firing)"),
        "{body}"
    );
    assert!(body.contains("  Alert: alerts/a2"), "{body}");
    assert!(
        body.contains("  runbook: https://runbooks.example/lost"),
        "{body}"
    );
    assert!(!mail.tls);
    assert_eq!(mail.auth_login, None);
}

#[tokio::test]
async fn email_uses_starttls_and_smtp_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let mut smtp = SmtpSink::start(Some((&cert, &key)), Some("warden:s3cret-pass")).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut good = email("mail", smtp.port, SmtpTls::Starttls);
    good.username = Some("warden".into());
    good.password = Some(Secret::new("s3cret-pass"));
    good.ca_file = Some(cert.clone());
    let mut bad = good.clone();
    bad.password = Some(Secret::new("wr0ng-pass-xyz"));
    let configs = [
        ReceiverConfig {
            name: "mail".into(),
            channel: ChannelConfig::Email(good),
            retry: None,
        },
        ReceiverConfig {
            name: "mail-bad-password".into(),
            channel: ChannelConfig::Email(bad),
            retry: None,
        },
    ];
    let (d, _cancel) = dispatcher(
        &configs,
        quick_retry(3, Duration::from_secs(10)),
        clock.clone(),
        DispatcherSettings::default(),
    );
    let now = clock.now();
    let mut n = notification(
        "mail",
        vec![alert("a1", "worker_lost", Severity::Critical, "w-1", now)],
    );
    n.escalated = true;
    let id = d.dispatch(n.clone());
    let done = wait_final(&d, id, Duration::from_secs(15)).await;
    assert_eq!(done.state, DeliveryState::Sent, "{done:?}");
    let mail = smtp.next_mail().await;
    assert!(mail.tls, "the message went over STARTTLS");
    assert_eq!(mail.auth_login.as_deref(), Some("warden"));
    assert_eq!(
        mail.subject,
        "[ESCALATED] [FIRING] critical: 1 alert — Worker w-1 lost"
    );
    assert!(
        mail.body
            .unwrap()
            .contains("ESCALATED: still unacknowledged.")
    );

    // A refused password is permanent (535): failed at once, the password nowhere.
    n.receiver = "mail-bad-password".into();
    let id = d.dispatch(n);
    let done = wait_final(&d, id, Duration::from_secs(15)).await;
    assert_eq!(done.state, DeliveryState::Failed, "{done:?}");
    assert_eq!(
        done.attempts, 1,
        "an authentication failure is not retried: {done:?}"
    );
    let error = done.last_error.clone().unwrap();
    assert!(
        error.contains("email receiver mail-bad-password"),
        "{error}"
    );
    assert!(!error.contains("wr0ng-pass-xyz"), "{error}");
    assert!(!format!("{done:?}").contains("wr0ng-pass-xyz"));
    assert!(!format!("{configs:?}").contains("s3cret-pass"));
}
