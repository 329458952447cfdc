//! PagerDuty Events API v2: `trigger` while firing, `resolve` once resolved, both with the
//! notification group's key as `dedup_key` so that PagerDuty keeps one incident per group.
use serde_json::{Value, json};
use warden_core::{
    history::Severity,
    ports::{BoxFuture, Notification, Notifier, PortError},
};

use super::{BuildError, ChannelKind, Target, check_url, headline, http_client, marker, send};
use crate::{config::PagerDutyConfig, secret::Secret};

/// PagerDuty truncates longer summaries; we cut first so the end is ours ("…").
pub const MAX_SUMMARY_CHARS: usize = 1024;

pub struct PagerDutyNotifier {
    target: Target,
    routing_key: Secret,
    url: Secret,
    client: reqwest::Client,
}

impl PagerDutyNotifier {
    pub fn new(
        receiver: &str,
        config: &PagerDutyConfig,
        timeout: std::time::Duration,
    ) -> Result<Self, BuildError> {
        check_url(receiver, "pagerduty.url", &config.url)?;
        if config.routing_key.is_empty() {
            return Err(super::invalid(receiver, "pagerduty.routing_key is empty"));
        }
        Ok(Self {
            target: Target {
                kind: ChannelKind::PagerDuty,
                receiver: receiver.to_owned(),
                timeout,
            },
            routing_key: config.routing_key.clone(),
            url: Secret::new(config.url.clone()),
            client: http_client(receiver, timeout)?,
        })
    }
}

impl Notifier for PagerDutyNotifier {
    fn channel(&self) -> &str {
        &self.target.receiver
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let body = render(n, self.routing_key.expose());
            let request = self.client.post(self.url.expose()).json(&body);
            send(&self.target, request, &[&self.routing_key, &self.url]).await
        })
    }
}

/// PagerDuty's severities are critical, error, warning and info; warden's three map onto
/// their namesakes (`error` is not used).
pub fn severity(s: Severity) -> &'static str {
    super::severity_name(s)
}

/// The event's JSON body. A resolve carries only what PagerDuty reads for it (key, action,
/// dedup key); a trigger carries the payload.
pub fn render(n: &Notification, routing_key: &str) -> Value {
    if n.resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": n.group_key,
        });
    }
    let mut summary = format!("{} {}", marker(n), headline(n));
    if summary.chars().count() > MAX_SUMMARY_CHARS {
        summary = summary.chars().take(MAX_SUMMARY_CHARS - 1).collect();
        summary.push('…');
    }
    let source = n
        .common_labels
        .get("worker")
        .or_else(|| n.common_labels.get("group"))
        .cloned()
        .unwrap_or_else(|| "warden".to_owned());
    let started = n.alerts.iter().map(|a| a.started_at).min();
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "rule": a.rule,
                "severity": super::severity_name(a.severity),
                "summary": a.summary,
                "description": a.description,
                "labels": a.labels,
                "annotations": a.annotations,
                "started_at": super::rfc3339(a.started_at),
            })
        })
        .collect();
    let mut payload = json!({
        "summary": summary,
        "source": source,
        "severity": severity(super::top_severity(n)),
        "custom_details": {
            "receiver": n.receiver,
            "group_key": n.group_key,
            "escalated": n.escalated,
            "common_labels": n.common_labels,
            "alerts": alerts,
        },
    });
    if let Some(t) = started {
        payload["timestamp"] = json!(super::rfc3339(t));
    }
    if let Some(group) = n.common_labels.get("group") {
        payload["group"] = json!(group);
    }
    if let [rule] = rules(n).as_slice() {
        payload["class"] = json!(rule);
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.group_key,
        "client": "warden",
        "payload": payload,
    })
}

fn rules(n: &Notification) -> Vec<&str> {
    let mut rules: Vec<&str> = n.alerts.iter().map(|a| a.rule.as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::fixtures::*;

    #[test]
    fn trigger_carries_key_dedup_and_payload() {
        let n = notification(vec![
            alert("a1", "worker_lost", Severity::Critical, "w-1"),
            alert("a2", "worker_lost", Severity::Warning, "w-2"),
        ]);
        let v = render(&n, "rk");
        assert_eq!(v["routing_key"], "rk");
        assert_eq!(v["event_action"], "trigger");
        assert_eq!(v["dedup_key"], n.group_key.as_str());
        let p = &v["payload"];
        assert_eq!(p["summary"], "[FIRING:2] 2 alerts: worker_lost");
        assert_eq!(p["source"], "payments");
        assert_eq!(p["severity"], "critical");
        assert_eq!(p["timestamp"], "2026-11-26T10:00:00.000Z");
        assert_eq!(p["class"], "worker_lost");
        let details = &p["custom_details"];
        assert_eq!(details["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(details["alerts"][1]["labels"]["worker"], "w-2");
        assert_eq!(details["common_labels"]["group"], "payments");
    }

    #[test]
    fn resolve_uses_the_same_dedup_key() {
        let n = notification(vec![alert("a1", "worker_lost", Severity::Info, "w-1")]);
        let trigger = render(&n, "rk");
        assert_eq!(trigger["payload"]["severity"], "info");
        let resolved = render(&resolve(n), "rk");
        assert_eq!(resolved["event_action"], "resolve");
        assert_eq!(resolved["dedup_key"], trigger["dedup_key"]);
        assert!(resolved.get("payload").is_none());
    }

    #[test]
    fn a_huge_summary_is_cut_to_pagerdutys_limit() {
        let mut a = alert("a1", "r", Severity::Warning, "w");
        a.summary = "x".repeat(5000);
        let v = render(&notification(vec![a]), "rk");
        let s = v["payload"]["summary"].as_str().unwrap();
        assert_eq!(s.chars().count(), MAX_SUMMARY_CHARS);
        assert!(s.ends_with('…'));
    }
}
