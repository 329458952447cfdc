//! A generic JSON webhook: a stable, versioned document, signed when a secret is set.
//!
//! Signature: `X-Warden-Signature: sha256=<hex HMAC-SHA256(secret, body)>` over the exact
//! bytes sent, and `X-Warden-Timestamp: <unix seconds>`. The body's `sent_at` is the same
//! instant, so a receiver that checks the signature can also refuse stale replays.
use std::{sync::Arc, time::SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use warden_core::{
    clock::Clock,
    ports::{BoxFuture, Notification, Notifier, PortError},
};

use super::{BuildError, ChannelKind, Target, check_url, http_client, send};
use crate::{config::WebhookConfig, secret::Secret};

/// The document's `version`: bumped only by a change a receiver could trip on.
pub const DOCUMENT_VERSION: &str = "1";
pub const SIGNATURE_HEADER: &str = "X-Warden-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Warden-Timestamp";

pub struct WebhookNotifier {
    target: Target,
    url: Secret,
    secret: Option<Secret>,
    headers: Vec<(reqwest::header::HeaderName, Secret)>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl WebhookNotifier {
    pub fn new(
        receiver: &str,
        config: &WebhookConfig,
        timeout: std::time::Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        check_url(receiver, "webhook.url", config.url.expose())?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let header =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    super::invalid(
                        receiver,
                        format!("webhook.headers: {name:?} is not a header name"),
                    )
                })?;
            if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                return Err(super::invalid(
                    receiver,
                    format!("webhook.headers: the value of {name} is not a valid header value"),
                ));
            }
            headers.push((header, value.clone()));
        }
        Ok(Self {
            target: Target {
                kind: ChannelKind::Webhook,
                receiver: receiver.to_owned(),
                timeout,
            },
            url: config.url.clone(),
            secret: config.secret.clone().filter(|s| !s.is_empty()),
            headers,
            client: http_client(receiver, timeout)?,
            clock,
        })
    }
}

impl Notifier for WebhookNotifier {
    fn channel(&self) -> &str {
        &self.target.receiver
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let now = self.clock.now();
            let body = serde_json::to_vec(&render(n, now))
                .map_err(|e| PortError::Failed(format!("{}: cannot encode: {e}", self.target)))?;
            let mut request = self
                .client
                .post(self.url.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, unix_seconds(now).to_string());
            if let Some(secret) = &self.secret {
                request = request.header(SIGNATURE_HEADER, signature(secret.expose(), &body));
            }
            for (name, value) in &self.headers {
                request = request.header(name.clone(), value.expose());
            }
            let mut secrets: Vec<&Secret> = vec![&self.url];
            secrets.extend(self.secret.iter());
            secrets.extend(self.headers.iter().map(|(_, v)| v));
            send(&self.target, request.body(body), &secrets).await
        })
    }
}

/// `sha256=<hex HMAC-SHA256(key, body)>`.
pub fn signature(key: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The document. Keys are never removed or renamed within a `version`.
pub fn render(n: &Notification, sent_at: SystemTime) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "rule": a.rule,
                "severity": super::severity_name(a.severity),
                "status": if a.firing { "firing" } else { "resolved" },
                "summary": a.summary,
                "description": a.description,
                "labels": a.labels,
                "annotations": a.annotations,
                "started_at": super::rfc3339(a.started_at),
                "resolved_at": a.resolved_at.map(super::rfc3339),
            })
        })
        .collect();
    json!({
        "version": DOCUMENT_VERSION,
        "group_key": n.group_key,
        "status": super::status(n),
        "receiver": n.receiver,
        "escalated": n.escalated,
        "common_labels": n.common_labels,
        "sent_at": super::rfc3339(sent_at),
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use warden_core::history::Severity;

    use super::*;
    use crate::channel::fixtures::*;

    #[test]
    fn document_has_every_field() {
        let n = resolve(notification(vec![alert(
            "a1",
            "worker_lost",
            Severity::Critical,
            "w-1",
        )]));
        let v = render(&n, t0());
        assert_eq!(v["version"], "1");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["receiver"], "oncall");
        assert_eq!(v["escalated"], false);
        assert_eq!(v["sent_at"], "2026-11-26T10:00:00.000Z");
        let a = &v["alerts"][0];
        assert_eq!(a["name"], "alerts/a1");
        assert_eq!(a["status"], "resolved");
        assert_eq!(a["severity"], "critical");
        assert_eq!(a["started_at"], "2026-11-26T10:00:00.000Z");
        assert_eq!(a["resolved_at"], "2026-11-26T10:05:00.000Z");
        assert_eq!(a["annotations"]["runbook"], "https://runbooks/x");
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
