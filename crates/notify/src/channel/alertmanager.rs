//! Prometheus Alertmanager: `POST {url}/api/v2/alerts` with one entry per alert.
//!
//! A firing alert is sent without `endsAt`, so Alertmanager resolves it by itself after its
//! `resolve_timeout` (5 min by default) unless it is sent again: as with Prometheus, the
//! alert engine must repeat firing notifications to an Alertmanager more often than that.
//! A resolved alert carries `endsAt` (its resolve time), which resolves it at once.
use std::{sync::Arc, time::SystemTime};

use serde_json::{Value, json};
use warden_core::{
    clock::Clock,
    ports::{BoxFuture, Notification, Notifier, PortError},
};

use super::{BuildError, ChannelKind, Target, check_url, http_client, send};
use crate::{config::AlertmanagerConfig, secret::Secret};

pub struct AlertmanagerNotifier {
    target: Target,
    endpoint: Secret,
    generator_url: Option<String>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl AlertmanagerNotifier {
    pub fn new(
        receiver: &str,
        config: &AlertmanagerConfig,
        timeout: std::time::Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        check_url(receiver, "alertmanager.url", config.url.expose())?;
        let endpoint = format!(
            "{}/api/v2/alerts",
            config.url.expose().trim_end_matches('/')
        );
        Ok(Self {
            target: Target {
                kind: ChannelKind::Alertmanager,
                receiver: receiver.to_owned(),
                timeout,
            },
            endpoint: Secret::new(endpoint),
            generator_url: config
                .generator_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            client: http_client(receiver, timeout)?,
            clock,
        })
    }
}

impl Notifier for AlertmanagerNotifier {
    fn channel(&self) -> &str {
        &self.target.receiver
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let body = render(n, self.generator_url.as_deref(), self.clock.now());
            let request = self.client.post(self.endpoint.expose()).json(&body);
            send(&self.target, request, &[&self.endpoint]).await
        })
    }
}

/// The alerts array. Labels are the alert's plus `alertname` (its rule, unless set), which
/// Alertmanager's routes and UI expect; annotations are `summary`, `description` and the
/// alert's own.
pub fn render(n: &Notification, generator_url: Option<&str>, now: SystemTime) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            let mut labels = a.labels.clone();
            labels
                .entry("alertname".to_owned())
                .or_insert_with(|| a.rule.clone());
            let mut annotations = a.annotations.clone();
            annotations.insert("summary".to_owned(), a.summary.clone());
            if !a.description.is_empty() {
                annotations.insert("description".to_owned(), a.description.clone());
            }
            let mut entry = json!({
                "labels": labels,
                "annotations": annotations,
                "startsAt": super::rfc3339(a.started_at),
            });
            if !a.firing || n.resolved {
                entry["endsAt"] = json!(super::rfc3339(a.resolved_at.unwrap_or(now)));
            }
            if let Some(base) = generator_url {
                entry["generatorURL"] = json!(format!("{}/{}", base.trim_end_matches('/'), a.name));
            }
            entry
        })
        .collect();
    Value::Array(alerts)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use warden_core::history::Severity;

    use super::*;
    use crate::channel::fixtures::*;

    #[test]
    fn firing_alerts_have_no_end_and_carry_alertname() {
        let n = notification(vec![alert("a1", "worker_lost", Severity::Critical, "w-1")]);
        let v = render(&n, Some("https://warden.example/"), t0());
        let a = &v[0];
        assert_eq!(a["labels"]["alertname"], "worker_lost");
        assert_eq!(a["labels"]["worker"], "w-1");
        assert_eq!(a["annotations"]["summary"], "Worker w-1 lost");
        assert_eq!(
            a["annotations"]["description"],
            "No heartbeat from w-1 for 60s"
        );
        assert_eq!(a["annotations"]["runbook"], "https://runbooks/x");
        assert_eq!(a["startsAt"], "2026-11-26T10:00:00.000Z");
        assert!(a.get("endsAt").is_none());
        assert_eq!(a["generatorURL"], "https://warden.example/alerts/a1");
    }

    #[test]
    fn resolved_alerts_end_at_their_resolve_time_or_now() {
        let n = resolve(notification(vec![alert(
            "a1",
            "worker_lost",
            Severity::Critical,
            "w-1",
        )]));
        let v = render(&n, None, t0() + Duration::from_secs(900));
        assert_eq!(v[0]["endsAt"], "2026-11-26T10:05:00.000Z");
        assert!(v[0].get("generatorURL").is_none());
        let mut n = n;
        n.alerts[0].resolved_at = None;
        let v = render(&n, None, t0() + Duration::from_secs(900));
        assert_eq!(v[0]["endsAt"], "2026-11-26T10:15:00.000Z");
    }
}
