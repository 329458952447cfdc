//! The channels: one module per kind of receiver, each rendering the payload its service
//! expects and sending it. Shared here: the kinds, the HTTP call with safe error messages,
//! and the small text helpers every rendering uses.
use std::{fmt, time::SystemTime};

use warden_core::{
    history::Severity,
    ports::{Notification, PortError},
};

use crate::secret::{Secret, scrub};

pub mod alertmanager;
pub mod email;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

/// The kind of channel, as `Delivery.channel` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    Slack,
    PagerDuty,
    Email,
    Webhook,
    Alertmanager,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 5] = [
        ChannelKind::Slack,
        ChannelKind::PagerDuty,
        ChannelKind::Email,
        ChannelKind::Webhook,
        ChannelKind::Alertmanager,
    ];

    /// "slack", "pagerduty", "email", "webhook", "alertmanager".
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::PagerDuty => "pagerduty",
            ChannelKind::Email => "email",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Alertmanager => "alertmanager",
        }
    }

    /// The inverse of [`ChannelKind::as_str`] (for a ListDeliveries filter).
    pub fn parse(text: &str) -> Option<ChannelKind> {
        ChannelKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a notifier could not be built from its config; never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("receiver {receiver}: {reason}")]
    Invalid { receiver: String, reason: String },
    /// A setting shared by every receiver is wrong.
    #[error("notification settings: {0}")]
    Settings(String),
}

pub(crate) fn invalid(receiver: &str, reason: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        receiver: receiver.to_owned(),
        reason: reason.into(),
    }
}

/// An HTTP client for one receiver: every call bounded by `timeout`.
pub(crate) fn http_client(
    receiver: &str,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, BuildError> {
    // reqwest is built without a default crypto provider: the process shares ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| invalid(receiver, format!("HTTP client: {}", e.without_url())))
}

/// Checks that a URL is http(s) without echoing it (it may be the credential).
pub(crate) fn check_url(receiver: &str, key: &str, url: &str) -> Result<(), BuildError> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(_) => Err(invalid(
            receiver,
            format!("{key} must be an http or https URL"),
        )),
        Err(e) => Err(invalid(receiver, format!("{key} is not a valid URL ({e})"))),
    }
}

/// Who is being called, for error messages: "slack receiver oncall-slack".
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub kind: ChannelKind,
    pub receiver: String,
    /// The bound of one call, named when it is reached.
    pub timeout: std::time::Duration,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} receiver {}", self.kind, self.receiver)
    }
}

/// The longest part of a server's answer quoted in an error.
const MAX_QUOTED_BODY: usize = 200;

/// Sends one prepared request and maps the outcome to a [`PortError`] that names the
/// receiver but never its URL or any secret: 2xx is success; 408, 429 and 5xx and transport
/// errors are `Unavailable` (worth retrying); other statuses are `Failed` (not retried).
pub(crate) async fn send(
    target: &Target,
    request: reqwest::RequestBuilder,
    secrets: &[&Secret],
) -> Result<(), PortError> {
    let response = request.send().await.map_err(|e| PortError::Unavailable {
        dependency: target.kind.as_str(),
        reason: scrub(&describe(target, &e), secrets),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The answer's first words often say why (Slack: "invalid_payload"); bounded and scrubbed.
    let body = response.text().await.unwrap_or_default();
    let quoted: String = body.trim().chars().take(MAX_QUOTED_BODY).collect();
    let mut text = format!("HTTP {} from {target}", status.as_u16());
    if !quoted.is_empty() {
        text.push_str(": ");
        text.push_str(&quoted);
    }
    let text = scrub(&text, secrets);
    let transient = status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
    if transient {
        Err(PortError::Unavailable {
            dependency: target.kind.as_str(),
            reason: text,
        })
    } else {
        Err(PortError::Failed(text))
    }
}

/// A reqwest error in words, without its URL: the error and its causes.
fn describe(target: &Target, error: &reqwest::Error) -> String {
    if error.is_timeout() {
        // As the dispatcher words its own bound on an attempt.
        return format!(
            "no answer from {target} within {}",
            humantime::format_duration(target.timeout)
        );
    }
    let kind = if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = format!("{target}: {kind}");
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

/// "firing" or "resolved".
pub(crate) fn status(n: &Notification) -> &'static str {
    if n.resolved { "resolved" } else { "firing" }
}

/// The highest severity among the notification's alerts.
pub(crate) fn top_severity(n: &Notification) -> Severity {
    n.alerts
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or(Severity::Info)
}

pub(crate) fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// RFC 3339 in UTC with milliseconds ("2026-11-26T14:38:47.123Z").
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One line naming what the notification is about: the single alert's summary, or the
/// count and the rules involved.
pub(crate) fn headline(n: &Notification) -> String {
    match n.alerts.as_slice() {
        [one] => one.summary.clone(),
        alerts => {
            let mut rules: Vec<&str> = alerts.iter().map(|a| a.rule.as_str()).collect();
            rules.dedup();
            rules.sort_unstable();
            rules.dedup();
            format!("{} alerts: {}", alerts.len(), rules.join(", "))
        }
    }
}

/// `[FIRING:2]`, `[RESOLVED:1]`, with `[ESCALATED] ` in front of an escalation.
pub(crate) fn marker(n: &Notification) -> String {
    let status = if n.resolved { "RESOLVED" } else { "FIRING" };
    let escalated = if n.escalated { "[ESCALATED] " } else { "" };
    format!("{escalated}[{status}:{}]", n.alerts.len())
}

/// `k=v, k=v` in key order.
pub(crate) fn label_list(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::{
        collections::BTreeMap,
        time::{Duration, SystemTime},
    };

    use warden_core::{
        history::Severity,
        ports::{Notification, NotifiedAlert},
    };

    /// 2026-11-26T10:00:00Z.
    pub fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_687_200)
    }

    pub fn alert(id: &str, rule: &str, severity: Severity, worker: &str) -> NotifiedAlert {
        let labels: BTreeMap<String, String> = [
            ("rule", rule),
            ("severity", super::severity_name(severity)),
            ("worker", worker),
            ("group", "payments"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        NotifiedAlert {
            name: format!("alerts/{id}"),
            rule: rule.into(),
            severity,
            firing: true,
            summary: format!("Worker {worker} lost"),
            description: format!("No heartbeat from {worker} for 60s"),
            labels,
            annotations: [("runbook".to_owned(), "https://runbooks/x".to_owned())].into(),
            started_at: t0(),
            resolved_at: None,
        }
    }

    pub fn notification(alerts: Vec<NotifiedAlert>) -> Notification {
        Notification {
            group_key: "{}:{group=\"payments\"}".into(),
            receiver: "oncall".into(),
            resolved: false,
            escalated: false,
            common_labels: [("group".to_owned(), "payments".to_owned())].into(),
            alerts,
        }
    }

    pub fn resolve(mut n: Notification) -> Notification {
        n.resolved = true;
        for a in &mut n.alerts {
            a.firing = false;
            a.resolved_at = Some(t0() + Duration::from_secs(300));
        }
        n
    }
}
