//! Email over SMTP (lettre): STARTTLS by default, implicit TLS or none on request, AUTH when
//! a username is set. Plain text, one block per alert.
use std::{sync::Arc, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use warden_core::{
    clock::Clock,
    ports::{BoxFuture, Notification, Notifier, PortError},
};

use super::{BuildError, ChannelKind, Target, headline, invalid};
use crate::{
    config::{EmailConfig, SmtpTls},
    secret::{Secret, scrub},
};

pub struct EmailNotifier {
    target: Target,
    from: Mailbox,
    to: Vec<Mailbox>,
    password: Option<Secret>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    clock: Arc<dyn Clock>,
}

impl EmailNotifier {
    pub fn new(
        receiver: &str,
        config: &EmailConfig,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| invalid(receiver, format!("email.from {:?}: {e}", config.from)))?;
        if config.to.is_empty() {
            return Err(invalid(receiver, "email.to lists no recipient"));
        }
        let to = config
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| invalid(receiver, format!("email.to {a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if config.host.is_empty() {
            return Err(invalid(receiver, "email.host is empty"));
        }
        if config.password.is_some() && config.username.is_none() {
            return Err(invalid(
                receiver,
                "email.password is set without email.username",
            ));
        }
        // lettre's rustls needs a process-wide provider: the process shares ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(config.host.clone());
                if let Some(path) = &config.ca_file {
                    let pem = std::fs::read(path).map_err(|e| {
                        invalid(receiver, format!("email.ca_file {}: {e}", path.display()))
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| {
                        invalid(receiver, format!("email.ca_file {}: {e}", path.display()))
                    })?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| invalid(receiver, format!("email TLS settings: {e}")))?;
                if mode == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(user) = &config.username {
            let password = config
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            target: Target {
                kind: ChannelKind::Email,
                receiver: receiver.to_owned(),
                timeout,
            },
            from,
            to,
            password: config.password.clone(),
            transport: builder.build(),
            clock,
        })
    }
}

impl Notifier for EmailNotifier {
    fn channel(&self) -> &str {
        &self.target.receiver
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let mut message = Message::builder()
                .from(self.from.clone())
                .subject(subject(n))
                .date(self.clock.now())
                .header(ContentType::TEXT_PLAIN);
            for to in &self.to {
                message = message.to(to.clone());
            }
            let message = message.body(body(n)).map_err(|e| {
                PortError::Failed(format!("{}: cannot build the message: {e}", self.target))
            })?;
            let secrets: Vec<&Secret> = self.password.iter().collect();
            match self.transport.send(message).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let text = scrub(&format!("{}: {}", self.target, describe(&e)), &secrets);
                    if e.is_permanent() {
                        Err(PortError::Failed(text))
                    } else {
                        Err(PortError::Unavailable {
                            dependency: ChannelKind::Email.as_str(),
                            reason: text,
                        })
                    }
                }
            }
        })
    }
}

/// lettre's error and its causes (it names no password; the server's answer is quoted).
fn describe(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        // Some errors repeat their cause in their own text: say it once.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `[FIRING] critical: 2 alerts — Worker w-1 lost`, with `[ESCALATED] ` in front of an
/// escalation: status, severity and count first, so that a mail client's list shows them.
pub fn subject(n: &Notification) -> String {
    let status = if n.resolved { "RESOLVED" } else { "FIRING" };
    let escalated = if n.escalated { "[ESCALATED] " } else { "" };
    let count = match n.alerts.len() {
        1 => "1 alert".to_owned(),
        k => format!("{k} alerts"),
    };
    format!(
        "{escalated}[{status}] {}: {count} — {}",
        super::severity_name(super::top_severity(n)),
        headline(n)
    )
}

/// The plain-text body: a header, the common labels, then one block per alert.
pub fn body(n: &Notification) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} alert(s) {} for receiver {}.",
        n.alerts.len(),
        super::status(n),
        n.receiver
    );
    if n.escalated {
        let _ = writeln!(out, "ESCALATED: still unacknowledged.");
    }
    if !n.common_labels.is_empty() {
        let _ = writeln!(
            out,
            "Common labels: {}",
            super::label_list(&n.common_labels)
        );
    }
    let _ = writeln!(out, "Group key: {}", n.group_key);
    for a in &n.alerts {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "[{}] {} — {} ({})",
            super::severity_name(a.severity).to_uppercase(),
            a.rule,
            a.summary,
            if a.firing { "firing" } else { "resolved" }
        );
        if !a.description.is_empty() {
            let _ = writeln!(out, "  {}", a.description);
        }
        let _ = writeln!(out, "  Alert: {}", a.name);
        let _ = writeln!(out, "  Started: {}", super::rfc3339(a.started_at));
        if let Some(t) = a.resolved_at {
            let _ = writeln!(out, "  Resolved: {}", super::rfc3339(t));
        }
        if !a.labels.is_empty() {
            let _ = writeln!(out, "  Labels: {}", super::label_list(&a.labels));
        }
        for (k, v) in &a.annotations {
            let _ = writeln!(out, "  {k}: {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use warden_core::history::Severity;

    use super::*;
    use crate::channel::fixtures::*;

    #[test]
    fn subject_has_status_severity_and_count() {
        let n = notification(vec![
            alert("a1", "worker_lost", Severity::Warning, "w-1"),
            alert("a2", "worker_lost", Severity::Critical, "w-2"),
        ]);
        assert_eq!(
            subject(&n),
            "[FIRING] critical: 2 alerts — 2 alerts: worker_lost"
        );
        let mut one = notification(vec![alert("a1", "worker_lost", Severity::Warning, "w-1")]);
        one.escalated = true;
        assert_eq!(
            subject(&one),
            "[ESCALATED] [FIRING] warning: 1 alert — Worker w-1 lost"
        );
        assert_eq!(
            subject(&resolve(notification(vec![alert(
                "a1",
                "r",
                Severity::Info,
                "w"
            )]))),
            "[RESOLVED] info: 1 alert — Worker w lost"
        );
    }

    #[test]
    fn body_lists_each_alert() {
        let n = resolve(notification(vec![
            alert("a1", "worker_lost", Severity::Warning, "w-1"),
            alert("a2", "worker_lost", Severity::Critical, "w-2"),
        ]));
        let b = body(&n);
        assert!(b.starts_with("2 alert(s) resolved for receiver oncall.\n"));
        assert!(b.contains("[WARNING] worker_lost — Worker w-1 lost (resolved)"));
        assert!(b.contains("[CRITICAL] worker_lost — Worker w-2 lost (resolved)"));
        assert!(b.contains("  Alert: alerts/a2"));
        assert!(b.contains("  Resolved: 2026-11-26T10:05:00.000Z"));
        assert!(b.contains("  runbook: https://runbooks/x"));
    }
}
