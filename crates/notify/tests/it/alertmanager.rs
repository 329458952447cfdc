//! Alerts posted to a real Alertmanager, then read back from its API.
use std::{sync::Arc, time::Duration};

use warden_core::{
    clock::{Clock, SystemClock},
    history::Severity,
};
use warden_notify::{
    ChannelConfig, DeliveryState, DispatcherSettings, ReceiverConfig, RetryPolicy, Secret,
    config::AlertmanagerConfig,
};

use crate::support::*;

#[tokio::test]
async fn alertmanager_lists_the_alert_then_resolves_it() {
    let am = Alertmanager::start().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let configs = [ReceiverConfig {
        name: "am".into(),
        channel: ChannelConfig::Alertmanager(AlertmanagerConfig {
            url: Secret::new(format!("{}/", am.url)),
            generator_url: Some("https://warden.example".into()),
        }),
        retry: None,
    }];
    let (d, _cancel) = dispatcher(
        &configs,
        RetryPolicy::default(),
        clock.clone(),
        DispatcherSettings::default(),
    );
    let started = clock.now() - Duration::from_secs(120);
    let firing = notification(
        "am",
        vec![alert(
            "a1",
            "worker_lost",
            Severity::Critical,
            "w-1",
            started,
        )],
    );
    let id = d.dispatch(firing.clone());
    let done = wait_final(&d, id, Duration::from_secs(10)).await;
    assert_eq!(done.state, DeliveryState::Sent, "{done:?}");

    let alerts = am.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], "worker_lost");
    assert_eq!(a["labels"]["worker"], "w-1");
    assert_eq!(a["labels"]["group"], "payments");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["annotations"]["summary"], "Worker w-1 lost");
    assert_eq!(
        a["annotations"]["description"],
        "No heartbeat from w-1 for 60s"
    );
    assert_eq!(a["annotations"]["runbook"], "https://runbooks.example/lost");
    assert_eq!(a["status"]["state"], "active");
    assert_eq!(a["generatorURL"], "https://warden.example/alerts/a1");
    let starts = a["startsAt"].as_str().unwrap();
    let starts = humantime::parse_rfc3339(starts).unwrap();
    let skew = starts
        .duration_since(started)
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(1),
        "startsAt {starts:?} vs {started:?}"
    );

    // Resolved: Alertmanager no longer lists it as active.
    let id = d.dispatch(resolved(firing, clock.now()));
    assert_eq!(
        wait_final(&d, id, Duration::from_secs(10)).await.state,
        DeliveryState::Sent
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alerts = am.alerts().await;
        let active = alerts
            .iter()
            .any(|a| a["labels"]["worker"] == "w-1" && a["status"]["state"] == "active");
        if !active {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still active after resolve: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
