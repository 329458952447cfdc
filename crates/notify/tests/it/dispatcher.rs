//! The dispatcher against real sinks: independence of receivers, retries, overflow,
//! suppression, outcomes, cancellation, and secrets kept out of every error and Debug.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::Notify;
use warden_core::{
    clock::{Clock, ManualClock},
    history::Severity,
};
use warden_notify::{
    ChannelConfig, ChannelKind, Delivery, DeliveryQuery, DeliveryState, DispatcherSettings,
    NotifiedState, ReceiverConfig, RetryPolicy, Secret,
    config::{
        AlertmanagerConfig, EmailConfig, PagerDutyConfig, SlackConfig, SmtpTls, WebhookConfig,
    },
};

use crate::support::*;

fn manual() -> (ManualClock, Arc<dyn Clock>) {
    let c = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_687_200));
    (c.clone(), Arc::new(c))
}

fn webhook(name: &str, url: String) -> ReceiverConfig {
    ReceiverConfig {
        name: name.into(),
        channel: ChannelConfig::Webhook(WebhookConfig {
            url: Secret::new(url),
            secret: None,
            headers: BTreeMap::new(),
        }),
        retry: None,
    }
}

fn one(receiver: &str, id: &str, at: SystemTime) -> warden_core::ports::Notification {
    notification(
        receiver,
        vec![alert(id, "worker_lost", Severity::Critical, "w-1", at)],
    )
}

#[tokio::test]
async fn a_receiver_that_never_answers_delays_no_other() {
    let sink = HttpSink::start().await;
    sink.script("/stuck", vec![Step::Hang]);
    let (manual, clock) = manual();
    let mut stuck = webhook("stuck", sink.url("/stuck"));
    stuck.retry = Some(quick_retry(2, Duration::from_secs(3)));
    let configs = [stuck, webhook("good", sink.url("/good"))];
    let (d, _cancel) = dispatcher(
        &configs,
        RetryPolicy::default(),
        clock,
        DispatcherSettings::default(),
    );

    let start = Instant::now();
    let hung = d.dispatch(one("stuck", "a1", manual.now()));
    sink.wait_requests("/stuck", 1).await; // the stuck receiver is busy with it
    let good = d.dispatch(one("good", "a1", manual.now()));
    let sent = wait_final(&d, good, Duration::from_secs(10)).await;
    let took = start.elapsed();
    assert_eq!(sent.state, DeliveryState::Sent);
    assert!(
        took < Duration::from_secs(1),
        "the good receiver waited {took:?}"
    );
    assert_eq!(
        d.get(hung).unwrap().state,
        DeliveryState::Pending,
        "still on its first attempt"
    );

    // The hanging attempt is cut at its timeout and retried.
    let retrying = wait_until(
        "the stuck delivery retrying",
        Duration::from_secs(10),
        || d.get(hung).filter(|x| x.state == DeliveryState::Retrying),
    )
    .await;
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert_eq!(retrying.attempts, 1);
    assert_eq!(
        retrying.last_error.as_deref(),
        Some("no answer from webhook receiver stuck within 3s")
    );
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_sent() {
    let sink = HttpSink::start().await;
    let release = Arc::new(Notify::new());
    sink.script(
        "/flaky/tok-SECRET",
        vec![Step::Status(503), Step::Gate(release.clone())],
    );
    let (manual, clock) = manual();
    let outcomes: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let seen = outcomes.clone();
    let settings = DispatcherSettings {
        on_outcome: Some(Arc::new(move |d: &Delivery| {
            seen.lock().unwrap().push(d.clone())
        })),
        ..DispatcherSettings::default()
    };
    let configs = [webhook("flaky", sink.url("/flaky/tok-SECRET"))];
    let (d, _cancel) = dispatcher(
        &configs,
        quick_retry(5, Duration::from_secs(10)),
        clock,
        settings,
    );
    let t0 = manual.now();
    let id = d.dispatch(one("flaky", "a1", t0));

    // First attempt: 503 → RETRYING, the error naming the receiver, not the URL.
    let retrying = wait_until("RETRYING", Duration::from_secs(10), || {
        d.get(id).filter(|x| x.state == DeliveryState::Retrying)
    })
    .await;
    assert_eq!(retrying.attempts, 1);
    let error = retrying.last_error.clone().unwrap();
    assert_eq!(error, "HTTP 503 from webhook receiver flaky: sink says 503");
    assert!(
        !error.contains("tok-SECRET") && !error.contains("127.0.0.1"),
        "{error}"
    );
    assert_eq!(
        retrying.next_attempt_at,
        Some(t0 + Duration::from_millis(100))
    );
    assert_eq!(retrying.sent_at, None);
    assert!(outcomes.lock().unwrap().is_empty(), "not final yet");

    // Second attempt succeeds once released.
    sink.wait_requests("/flaky/tok-SECRET", 2).await;
    manual.advance(Duration::from_secs(1));
    release.notify_one();
    let sent = wait_final(&d, id, Duration::from_secs(10)).await;
    assert_eq!(sent.state, DeliveryState::Sent);
    assert_eq!(sent.attempts, 2);
    assert_eq!(sent.sent_at, Some(t0 + Duration::from_secs(1)));
    assert_eq!(sent.next_attempt_at, None);
    assert_eq!(sent.create_time, t0);
    assert_eq!(sent.alerts, vec!["alerts/a1"]);
    assert_eq!(sent.channel, Some(ChannelKind::Webhook));
    assert_eq!(sent.notified_state, NotifiedState::Firing);
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1, "one final outcome: {outcomes:?}");
    assert_eq!(outcomes[0], sent);
}

#[tokio::test]
async fn a_rejected_request_is_not_retried() {
    let sink = HttpSink::start().await;
    sink.script("/bad", vec![Step::Status(400)]);
    let (manual, clock) = manual();
    let (d, _cancel) = dispatcher(
        &[webhook("bad", sink.url("/bad"))],
        quick_retry(5, Duration::from_secs(5)),
        clock,
        DispatcherSettings::default(),
    );
    let id = d.dispatch(one("bad", "a1", manual.now()));
    let failed = wait_final(&d, id, Duration::from_secs(10)).await;
    assert_eq!(failed.state, DeliveryState::Failed);
    assert_eq!(failed.attempts, 1);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("HTTP 400 from webhook receiver bad: sink says 400")
    );
    assert_eq!(sink.requests("/bad").len(), 1);
}

#[tokio::test]
async fn a_full_queue_is_a_failed_delivery_not_a_wait() {
    let sink = HttpSink::start().await;
    sink.script("/stuck", vec![Step::Hang]);
    let (manual, clock) = manual();
    let settings = DispatcherSettings {
        queue_capacity: 1,
        ..DispatcherSettings::default()
    };
    let (d, _cancel) = dispatcher(
        &[webhook("stuck", sink.url("/stuck"))],
        quick_retry(1, Duration::from_secs(30)),
        clock,
        settings,
    );
    let first = d.dispatch(one("stuck", "a1", manual.now()));
    sink.wait_requests("/stuck", 1).await;
    let start = Instant::now();
    let queued = d.dispatch(one("stuck", "a2", manual.now()));
    let refused = d.dispatch(one("stuck", "a3", manual.now()));
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "dispatch waited"
    );
    assert_eq!(d.get(first).unwrap().state, DeliveryState::Pending);
    assert_eq!(d.get(queued).unwrap().state, DeliveryState::Pending);
    let refused = d.get(refused).unwrap();
    assert_eq!(refused.state, DeliveryState::Failed);
    assert_eq!(
        refused.last_error.as_deref(),
        Some("the queue of webhook receiver stuck is full (1 waiting): dropped")
    );
}

#[tokio::test]
async fn suppressed_and_unknown_receivers_are_recorded_and_queryable() {
    let sink = HttpSink::start().await;
    let (manual, clock) = manual();
    let outcomes: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let seen = outcomes.clone();
    let settings = DispatcherSettings {
        on_outcome: Some(Arc::new(move |d: &Delivery| {
            seen.lock().unwrap().push(d.clone())
        })),
        ..DispatcherSettings::default()
    };
    let (d, _cancel) = dispatcher(
        &[webhook("hook", sink.url("/ok"))],
        RetryPolicy::default(),
        clock,
        settings,
    );
    let t0 = manual.now();
    let sent = d.dispatch(one("hook", "a1", t0));
    wait_final(&d, sent, Duration::from_secs(10)).await;
    manual.advance(Duration::from_secs(1));
    let silenced = d.record_suppressed(&one("hook", "a2", t0), "silenced by silences/abc");
    let nowhere = d.dispatch(resolved(one("nobody", "a1", t0), t0));

    let s = d.get(silenced).unwrap();
    assert_eq!(s.state, DeliveryState::Suppressed);
    assert_eq!(
        s.suppressed_reason.as_deref(),
        Some("silenced by silences/abc")
    );
    assert_eq!(s.channel, Some(ChannelKind::Webhook));
    assert_eq!(s.create_time, t0 + Duration::from_secs(1));
    assert_eq!(s.attempts, 0);
    let u = d.get(nowhere).unwrap();
    assert_eq!(u.state, DeliveryState::Failed);
    assert_eq!(u.channel, None);
    assert_eq!(u.notified_state, NotifiedState::Resolved);
    assert_eq!(u.last_error.as_deref(), Some("no receiver named nobody"));
    assert_eq!(
        sink.requests("/ok").len(),
        1,
        "nothing sent for the suppressed one"
    );

    let ids = |q: DeliveryQuery| {
        d.query(&q)
            .deliveries
            .iter()
            .map(|x| x.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(DeliveryQuery::default()), vec![nowhere, silenced, sent]);
    assert_eq!(
        ids(DeliveryQuery {
            alert: Some("alerts/a1".into()),
            ..Default::default()
        }),
        vec![nowhere, sent]
    );
    assert_eq!(
        ids(DeliveryQuery {
            states: vec![DeliveryState::Suppressed, DeliveryState::Sent],
            channels: vec![ChannelKind::Webhook],
            ..Default::default()
        }),
        vec![silenced, sent]
    );
    let finals: Vec<_> = outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|x| (x.id, x.state))
        .collect();
    assert_eq!(
        finals,
        vec![
            (sent, DeliveryState::Sent),
            (silenced, DeliveryState::Suppressed),
            (nowhere, DeliveryState::Failed)
        ]
    );
}

#[tokio::test]
async fn cancellation_stops_every_receiver_task() {
    let sink = HttpSink::start().await;
    sink.script("/stuck", vec![Step::Hang]);
    let (manual, clock) = manual();
    let (d, cancel) = dispatcher(
        &[
            webhook("stuck", sink.url("/stuck")),
            webhook("idle", sink.url("/idle")),
        ],
        RetryPolicy::default(),
        clock,
        DispatcherSettings::default(),
    );
    let hung = d.dispatch(one("stuck", "a1", manual.now()));
    sink.wait_requests("/stuck", 1).await;
    let queued = d.dispatch(one("stuck", "a2", manual.now()));
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), d.stopped())
        .await
        .expect("every receiver task ends on cancel");
    let hung = d.get(hung).unwrap();
    assert_eq!(hung.state, DeliveryState::Failed);
    assert_eq!(
        hung.last_error.as_deref(),
        Some("warden stopped during an attempt")
    );
    let queued = d.get(queued).unwrap();
    assert_eq!(queued.state, DeliveryState::Failed);
    assert_eq!(
        queued.last_error.as_deref(),
        Some("warden stopped before it was sent")
    );
    // After the stop, dispatch still returns at once, recording the refusal.
    let late = d.get(d.dispatch(one("idle", "a3", manual.now()))).unwrap();
    assert_eq!(late.state, DeliveryState::Failed);
}

#[tokio::test]
async fn secrets_never_reach_errors_or_debug_output() {
    // One receiver of each kind, all pointed at a port where nothing listens, and a sink that
    // answers 503: every error is produced, none may carry a secret, nor may the logs.
    let logs = LogCapture::start();
    let closed = format!("127.0.0.1:{}", free_port());
    let sink = HttpSink::start().await;
    for path in [
        "/services/SLACKSECRET",
        "/pd",
        "/hook/HOOKSECRET",
        "/api/v2/alerts",
    ] {
        sink.script(path, vec![Step::Status(503), Step::Status(503)]);
    }
    let secrets = [
        "SLACKSECRET",
        "PDROUTINGSECRET",
        "HOOKSECRET",
        "HMACSECRET",
        "Bearer HEADERSECRET",
        "SMTPPASSSECRET",
        "amuser:AMPASSSECRET",
    ];
    let mut configs = Vec::new();
    for (prefix, base) in [
        ("closed", format!("http://{closed}")),
        ("503", sink.url("")),
    ] {
        configs.push(ReceiverConfig {
            name: format!("{prefix}-slack"),
            channel: ChannelConfig::Slack(SlackConfig {
                webhook_url: Secret::new(format!("{base}/services/SLACKSECRET")),
            }),
            retry: None,
        });
        configs.push(ReceiverConfig {
            name: format!("{prefix}-pd"),
            channel: ChannelConfig::Pagerduty(PagerDutyConfig {
                routing_key: Secret::new("PDROUTINGSECRET"),
                url: format!("{base}/pd"),
            }),
            retry: None,
        });
        configs.push(ReceiverConfig {
            name: format!("{prefix}-hook"),
            channel: ChannelConfig::Webhook(WebhookConfig {
                url: Secret::new(format!("{base}/hook/HOOKSECRET")),
                secret: Some(Secret::new("HMACSECRET")),
                headers: BTreeMap::from([(
                    "Authorization".to_owned(),
                    Secret::new("Bearer HEADERSECRET"),
                )]),
            }),
            retry: None,
        });
        configs.push(ReceiverConfig {
            name: format!("{prefix}-am"),
            channel: ChannelConfig::Alertmanager(AlertmanagerConfig {
                url: Secret::new(base.replace("http://", "http://amuser:AMPASSSECRET@")),
                generator_url: None,
            }),
            retry: None,
        });
    }
    let closed_port: u16 = closed.rsplit(':').next().unwrap().parse().unwrap();
    configs.push(ReceiverConfig {
        name: "closed-mail".into(),
        channel: ChannelConfig::Email(EmailConfig {
            host: "127.0.0.1".into(),
            port: closed_port,
            tls: SmtpTls::None,
            username: Some("warden".into()),
            password: Some(Secret::new("SMTPPASSSECRET")),
            from: "warden@example.com".into(),
            to: vec!["oncall@example.com".into()],
            ca_file: None,
        }),
        retry: None,
    });
    let (manual, clock) = manual();
    let (d, _cancel) = dispatcher(
        &configs,
        quick_retry(2, Duration::from_secs(5)),
        clock.clone(),
        DispatcherSettings::default(),
    );
    let ids: Vec<_> = configs
        .iter()
        .map(|c| d.dispatch(one(&c.name, "a1", manual.now())))
        .collect();
    let mut texts = vec![format!("{configs:?}"), format!("{d:?}")];
    for (id, config) in ids.into_iter().zip(&configs) {
        let done = wait_final(&d, id, Duration::from_secs(20)).await;
        assert_eq!(done.state, DeliveryState::Failed, "{done:?}");
        assert_eq!(done.attempts, 2, "{done:?}");
        let error = done.last_error.clone().unwrap();
        assert!(
            error.contains(&format!("receiver {}", config.name)),
            "the error names the receiver: {error}"
        );
        texts.push(error);
        texts.push(format!("{done:?}"));
    }
    let receivers =
        warden_notify::build_receivers(&configs, RetryPolicy::default(), clock).unwrap();
    texts.push(format!("{receivers:?}"));
    let log_text = logs.text();
    assert!(
        log_text.contains("notification attempt failed; retrying")
            && log_text.contains("503-slack"),
        "the logs were captured: {log_text}"
    );
    texts.push(log_text);
    for text in &texts {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} leaked into: {text}");
        }
        assert!(
            !text.contains("/services/") && !text.contains("/hook/"),
            "a URL leaked into: {text}"
        );
    }
    // An invalid URL is refused without being echoed.
    let bad = ReceiverConfig {
        name: "bad".into(),
        channel: ChannelConfig::Slack(SlackConfig {
            webhook_url: Secret::new("ftp://SLACKSECRET"),
        }),
        retry: None,
    };
    let err = warden_notify::Receiver::from_config(&bad, RetryPolicy::default(), Arc::new(manual))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "receiver bad: slack.webhook_url must be an http or https URL"
    );
}

#[tokio::test]
async fn delivery_to_a_local_sink_takes_milliseconds() {
    // The target: condition → notification delivered to a local sink in < 5 s; the
    // notifier's share of it, measured from dispatch to the SENT outcome (told by the outcome
    // hook, so no polling in the measure), one notification at a time.
    let sink = HttpSink::start().await;
    let (manual, clock) = manual();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
    let settings = DispatcherSettings {
        on_outcome: Some(Arc::new(move |d: &Delivery| {
            let _ = tx.send(d.clone());
        })),
        ..DispatcherSettings::default()
    };
    let (d, _cancel) = dispatcher(
        &[webhook("hook", sink.url("/ok"))],
        RetryPolicy::default(),
        clock,
        settings,
    );
    let mut took = Vec::new();
    for i in 0..200 {
        let start = Instant::now();
        let id = d.dispatch(one("hook", &format!("a{i}"), manual.now()));
        let done = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an outcome within 5 s")
            .expect("the hook lives");
        took.push(start.elapsed());
        assert_eq!((done.id, done.state), (id, DeliveryState::Sent));
    }
    took.sort();
    let (p50, p99, max) = (took[100], took[197], took[199]);
    eprintln!("dispatch → SENT over 200 deliveries: p50 {p50:?}, p99 {p99:?}, max {max:?}");
    assert!(max < Duration::from_secs(5), "max {max:?}");
}
