//! Slack, PagerDuty and the webhook, delivered to a real HTTP sink and checked field by field.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use warden_core::{
    clock::{Clock, ManualClock},
    history::Severity,
};
use warden_notify::{
    ChannelConfig, DeliveryState, DispatcherSettings, ReceiverConfig, RetryPolicy, Secret,
    config::{PagerDutyConfig, SlackConfig, WebhookConfig},
};

use crate::support::*;

fn clock() -> (ManualClock, Arc<dyn Clock>) {
    // 2026-11-26T10:00:00Z
    let c =
        ManualClock::new(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_687_200));
    (c.clone(), Arc::new(c))
}

#[tokio::test]
async fn slack_gets_text_coloured_attachment_and_every_alert() {
    let sink = HttpSink::start().await;
    let (manual, clock) = clock();
    let configs = [ReceiverConfig {
        name: "oncall-slack".into(),
        channel: ChannelConfig::Slack(SlackConfig {
            webhook_url: Secret::new(sink.url("/services/T0/B0/slack-token")),
        }),
        retry: None,
    }];
    let (d, _cancel) = dispatcher(
        &configs,
        RetryPolicy::default(),
        clock,
        DispatcherSettings::default(),
    );
    let t0 = manual.now();
    let firing = notification(
        "oncall-slack",
        vec![
            alert("a1", "worker_lost", Severity::Critical, "w-1", t0),
            alert("a2", "worker_lost", Severity::Warning, "w-2", t0),
        ],
    );
    let id = d.dispatch(firing.clone());
    let done = wait_final(&d, id, Duration::from_secs(10)).await;
    assert_eq!(done.state, DeliveryState::Sent, "{done:?}");
    assert_eq!(done.attempts, 1);
    assert_eq!(done.sent_at, Some(t0));

    let req = &sink.wait_requests("/services/T0/B0/slack-token", 1).await[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = req.json();
    assert_eq!(body["text"], "[FIRING:2] 2 alerts: worker_lost");
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["color"], "#d00000");
    assert_eq!(attachment["fallback"], body["text"]);
    let blocks = attachment["blocks"].as_array().unwrap();
    assert_eq!(
        blocks.len(),
        4,
        "title, 2 alerts, common labels: {blocks:?}"
    );
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert_eq!(
        blocks[0]["text"]["text"],
        "*[FIRING:2] 2 alerts: worker_lost*"
    );
    let first = blocks[1]["text"]["text"].as_str().unwrap();
    assert_eq!(
        first,
        "*[CRITICAL]* `worker_lost` Worker w-1 lost (firing)\nNo heartbeat from w-1 for 60s\n\
         group=payments, rule=worker_lost, severity=critical, worker=w-1"
    );
    assert!(
        blocks[2]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("*[WARNING]* `worker_lost` Worker w-2 lost")
    );
    assert_eq!(blocks[3]["type"], "context");
    assert_eq!(blocks[3]["elements"][0]["text"], "group=payments");

    // Resolved: green, marked RESOLVED. Escalated: marked ESCALATED.
    let id = d.dispatch(resolved(firing.clone(), t0 + Duration::from_secs(60)));
    assert_eq!(
        wait_final(&d, id, Duration::from_secs(10)).await.state,
        DeliveryState::Sent
    );
    let mut escalated = firing;
    escalated.escalated = true;
    let id = d.dispatch(escalated);
    assert_eq!(
        wait_final(&d, id, Duration::from_secs(10)).await.state,
        DeliveryState::Sent
    );
    let reqs = sink.wait_requests("/services/T0/B0/slack-token", 3).await;
    let resolved_body = reqs[1].json();
    assert_eq!(resolved_body["text"], "[RESOLVED:2] 2 alerts: worker_lost");
    assert_eq!(resolved_body["attachments"][0]["color"], "#2eb886");
    assert!(
        resolved_body["attachments"][0]["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("(resolved)")
    );
    assert_eq!(
        reqs[2].json()["text"],
        "[ESCALATED] [FIRING:2] 2 alerts: worker_lost"
    );
}

#[tokio::test]
async fn pagerduty_triggers_then_resolves_under_one_dedup_key() {
    let sink = HttpSink::start().await;
    let (manual, clock) = clock();
    let configs = [ReceiverConfig {
        name: "pager".into(),
        channel: ChannelConfig::Pagerduty(PagerDutyConfig {
            routing_key: Secret::new("R0UTINGKEY0123456789abcdef012345"),
            url: sink.url("/v2/enqueue"),
        }),
        retry: None,
    }];
    let (d, _cancel) = dispatcher(
        &configs,
        RetryPolicy::default(),
        clock,
        DispatcherSettings::default(),
    );
    let t0 = manual.now();
    let started = t0 - Duration::from_secs(120);
    let firing = notification(
        "pager",
        vec![alert(
            "a1",
            "worker_lost",
            Severity::Critical,
            "w-1",
            started,
        )],
    );
    let id = d.dispatch(firing.clone());
    assert_eq!(
        wait_final(&d, id, Duration::from_secs(10)).await.state,
        DeliveryState::Sent
    );
    let id = d.dispatch(resolved(firing.clone(), t0));
    assert_eq!(
        wait_final(&d, id, Duration::from_secs(10)).await.state,
        DeliveryState::Sent
    );

    let reqs = sink.wait_requests("/v2/enqueue", 2).await;
    let trigger = reqs[0].json();
    assert_eq!(trigger["routing_key"], "R0UTINGKEY0123456789abcdef012345");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], firing.group_key.as_str());
    assert_eq!(trigger["client"], "warden");
    let p = &trigger["payload"];
    assert_eq!(p["summary"], "[FIRING:1] Worker w-1 lost");
    assert_eq!(p["source"], "payments");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["timestamp"], "2026-11-26T09:58:00.000Z");
    assert_eq!(p["group"], "payments");
    assert_eq!(p["class"], "worker_lost");
    let details = &p["custom_details"];
    assert_eq!(details["receiver"], "pager");
    assert_eq!(details["group_key"], firing.group_key.as_str());
    assert_eq!(details["escalated"], false);
    assert_eq!(details["common_labels"]["group"], "payments");
    let a = &details["alerts"][0];
    assert_eq!(a["name"], "alerts/a1");
    assert_eq!(a["rule"], "worker_lost");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["summary"], "Worker w-1 lost");
    assert_eq!(a["description"], "No heartbeat from w-1 for 60s");
    assert_eq!(a["labels"]["worker"], "w-1");
    assert_eq!(a["annotations"]["runbook"], "https://runbooks.example/lost");
    assert_eq!(a["started_at"], "2026-11-26T09:58:00.000Z");

    let resolve = reqs[1].json();
    assert_eq!(
        resolve,
        serde_json::json!({
            "routing_key": "R0UTINGKEY0123456789abcdef012345",
            "event_action": "resolve",
            "dedup_key": firing.group_key,
        })
    );
}

#[tokio::test]
async fn webhook_document_is_signed_with_hmac_sha256() {
    let sink = HttpSink::start().await;
    let (manual, clock) = clock();
    let secret = "whsec-0123456789";
    let configs = [
        ReceiverConfig {
            name: "signed".into(),
            channel: ChannelConfig::Webhook(WebhookConfig {
                url: Secret::new(sink.url("/hook/signed")),
                secret: Some(Secret::new(secret)),
                headers: BTreeMap::from([(
                    "Authorization".to_owned(),
                    Secret::new("Bearer tok-42"),
                )]),
            }),
            retry: None,
        },
        ReceiverConfig {
            name: "plain".into(),
            channel: ChannelConfig::Webhook(WebhookConfig {
                url: Secret::new(sink.url("/hook/plain")),
                secret: None,
                headers: BTreeMap::new(),
            }),
            retry: None,
        },
    ];
    let (d, _cancel) = dispatcher(
        &configs,
        RetryPolicy::default(),
        clock,
        DispatcherSettings::default(),
    );
    let t0 = manual.now();
    let mut n = notification(
        "signed",
        vec![alert("a1", "worker_lost", Severity::Warning, "w-1", t0)],
    );
    n.escalated = true;
    let n = resolved(n, t0 + Duration::from_secs(30));
    let id = d.dispatch(n.clone());
    assert_eq!(
        wait_final(&d, id, Duration::from_secs(10)).await.state,
        DeliveryState::Sent
    );
    let mut plain = n.clone();
    plain.receiver = "plain".into();
    let id = d.dispatch(plain);
    assert_eq!(
        wait_final(&d, id, Duration::from_secs(10)).await.state,
        DeliveryState::Sent
    );

    let req = &sink.wait_requests("/hook/signed", 1).await[0];
    // The signature is HMAC-SHA256 of the exact body, recomputed here.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&req.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(req.header("x-warden-signature"), Some(expected));
    assert_eq!(
        req.header("x-warden-timestamp").as_deref(),
        Some("1795687200")
    );
    assert_eq!(
        req.header("authorization").as_deref(),
        Some("Bearer tok-42")
    );
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );

    let body = req.json();
    assert_eq!(body["version"], "1");
    assert_eq!(body["group_key"], n.group_key.as_str());
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["receiver"], "signed");
    assert_eq!(body["escalated"], true);
    assert_eq!(
        body["common_labels"],
        serde_json::json!({"group": "payments"})
    );
    assert_eq!(body["sent_at"], "2026-11-26T10:00:00.000Z");
    let a = &body["alerts"][0];
    assert_eq!(a["name"], "alerts/a1");
    assert_eq!(a["rule"], "worker_lost");
    assert_eq!(a["severity"], "warning");
    assert_eq!(a["status"], "resolved");
    assert_eq!(a["summary"], "Worker w-1 lost");
    assert_eq!(a["description"], "No heartbeat from w-1 for 60s");
    assert_eq!(a["labels"]["worker"], "w-1");
    assert_eq!(a["annotations"]["runbook"], "https://runbooks.example/lost");
    assert_eq!(a["started_at"], "2026-11-26T10:00:00.000Z");
    assert_eq!(a["resolved_at"], "2026-11-26T10:00:30.000Z");

    // Without a secret: the same document, no signature.
    let plain = &sink.wait_requests("/hook/plain", 1).await[0];
    assert_eq!(plain.header("x-warden-signature"), None);
    assert_eq!(
        plain.header("x-warden-timestamp").as_deref(),
        Some("1795687200")
    );
    assert_eq!(plain.json()["receiver"], "plain");
}
