//! Receivers as the config file describes them: a name and one channel; [`NotifyConfig`]
//! gathers them with the dispatcher's settings.
//!
//! ```toml
//! retry = { attempt_timeout = "10s", max_attempts = 5, initial_backoff = "1s", max_backoff = "30s" }
//! queue_capacity = 256
//! log_capacity = 10000
//!
//! [[receivers]]
//! name = "oncall-slack"
//! slack = { webhook_url = "https://hooks.slack.com/services/..." }
//!
//! [[receivers]]
//! name = "oncall-pager"
//! pagerduty = { routing_key = "..." }
//! retry = { max_attempts = 8 }
//! ```
use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use crate::{channel::ChannelKind, retry::RetryPolicy, secret::Secret};

/// PagerDuty's Events API v2 endpoint.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// The SMTP submission port (STARTTLS).
pub const DEFAULT_SMTP_PORT: u16 = 587;

/// The notification section of the config file: receivers and the dispatcher's settings,
/// each with its documented default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    pub receivers: Vec<ReceiverConfig>,
    /// Every receiver's retry settings unless it sets its own.
    pub retry: RetryPolicy,
    /// Notifications waiting per receiver (see [`crate::dispatch::DEFAULT_QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// Deliveries kept in memory (see [`crate::log::DEFAULT_LOG_CAPACITY`]).
    pub log_capacity: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            receivers: Vec::new(),
            retry: RetryPolicy::default(),
            queue_capacity: crate::dispatch::DEFAULT_QUEUE_CAPACITY,
            log_capacity: crate::log::DEFAULT_LOG_CAPACITY,
        }
    }
}

/// One configured receiver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawReceiver")]
pub struct ReceiverConfig {
    /// What alert rules and deliveries call it ("oncall-slack").
    pub name: String,
    /// The channel, written as exactly one key: `slack`, `pagerduty`, `email`, `webhook` or
    /// `alertmanager`.
    pub channel: ChannelConfig,
    /// Overrides the dispatcher's retry settings for this receiver (unset keys keep the
    /// defaults).
    pub retry: Option<RetryPolicy>,
}

/// The file's shape, checked into a [`ReceiverConfig`]: unknown keys (a misspelt channel)
/// and two channels in one receiver are refused rather than silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    slack: Option<SlackConfig>,
    pagerduty: Option<PagerDutyConfig>,
    email: Option<EmailConfig>,
    webhook: Option<WebhookConfig>,
    alertmanager: Option<AlertmanagerConfig>,
    retry: Option<RetryPolicy>,
}

impl TryFrom<RawReceiver> for ReceiverConfig {
    type Error = String;

    fn try_from(raw: RawReceiver) -> Result<Self, String> {
        let mut channels: Vec<ChannelConfig> = Vec::new();
        channels.extend(raw.slack.map(ChannelConfig::Slack));
        channels.extend(raw.pagerduty.map(ChannelConfig::Pagerduty));
        channels.extend(raw.email.map(ChannelConfig::Email));
        channels.extend(raw.webhook.map(ChannelConfig::Webhook));
        channels.extend(raw.alertmanager.map(ChannelConfig::Alertmanager));
        if channels.len() != 1 {
            let found: Vec<&str> = channels.iter().map(|c| c.kind().as_str()).collect();
            return Err(format!(
                "receiver {}: set exactly one of slack, pagerduty, email, webhook, \
                 alertmanager (found {})",
                raw.name,
                if found.is_empty() {
                    "none".to_owned()
                } else {
                    found.join(", ")
                }
            ));
        }
        Ok(ReceiverConfig {
            name: raw.name,
            channel: channels.remove(0),
            retry: raw.retry,
        })
    }
}

/// The channel of a receiver, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelConfig {
    Slack(SlackConfig),
    Pagerduty(PagerDutyConfig),
    Email(EmailConfig),
    Webhook(WebhookConfig),
    Alertmanager(AlertmanagerConfig),
}

impl ChannelConfig {
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelConfig::Slack(_) => ChannelKind::Slack,
            ChannelConfig::Pagerduty(_) => ChannelKind::PagerDuty,
            ChannelConfig::Email(_) => ChannelKind::Email,
            ChannelConfig::Webhook(_) => ChannelKind::Webhook,
            ChannelConfig::Alertmanager(_) => ChannelKind::Alertmanager,
        }
    }
}

/// A Slack incoming webhook. The URL is the credential.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub webhook_url: Secret,
}

/// PagerDuty Events API v2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration key of the service.
    pub routing_key: Secret,
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
}

fn default_pagerduty_url() -> String {
    DEFAULT_PAGERDUTY_URL.into()
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption (a local relay only).
    None,
}

/// Email over SMTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP AUTH user; no AUTH when unset.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender, `"Warden <warden@example.com>"` or a bare address.
    pub from: String,
    /// Recipients; at least one.
    pub to: Vec<String>,
    /// A PEM file of extra CA certificates to trust (a relay with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_smtp_port() -> u16 {
    DEFAULT_SMTP_PORT
}

/// A generic JSON webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Secret,
    /// HMAC-SHA256 key: when set, each request carries `X-Warden-Signature`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Extra request headers (e.g. `Authorization`); their values are treated as secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// A Prometheus Alertmanager.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL (`http://alertmanager:9093`); alerts are posted to `{url}/api/v2/alerts`. It
    /// may carry credentials, so it is kept secret.
    pub url: Secret,
    /// When set, each alert's `generatorURL` is `{generator_url}/{alert name}` (a link back to
    /// warden's UI or API).
    #[serde(default)]
    pub generator_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        receivers: Vec<ReceiverConfig>,
    }

    #[test]
    fn every_channel_reads_from_toml_with_its_defaults() {
        let text = r#"
            [[receivers]]
            name = "s"
            slack = { webhook_url = "https://hooks.slack.com/services/T/B/x" }

            [[receivers]]
            name = "p"
            pagerduty = { routing_key = "rk-secret-1" }
            retry = { max_attempts = 8, initial_backoff = "500ms" }

            [[receivers]]
            name = "e"
            [receivers.email]
            host = "smtp.example.com"
            username = "u"
            password = "pw-secret-2"
            from = "warden@example.com"
            to = ["a@example.com", "b@example.com"]

            [[receivers]]
            name = "w"
            webhook = { url = "https://h.example/x", secret = "hmac-secret-3", headers = { Authorization = "Bearer t" } }

            [[receivers]]
            name = "am"
            alertmanager = { url = "http://am:9093" }
        "#;
        let file: File = toml::from_str(text).unwrap();
        let r = &file.receivers;
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].channel.kind(), ChannelKind::Slack);
        let ChannelConfig::Pagerduty(pd) = &r[1].channel else {
            panic!("pagerduty")
        };
        assert_eq!(pd.url, DEFAULT_PAGERDUTY_URL);
        let retry = r[1].retry.unwrap();
        assert_eq!(retry.max_attempts, 8);
        assert_eq!(retry.initial_backoff, std::time::Duration::from_millis(500));
        assert_eq!(
            retry.attempt_timeout,
            RetryPolicy::default().attempt_timeout
        );
        let ChannelConfig::Email(email) = &r[2].channel else {
            panic!("email")
        };
        assert_eq!(email.port, 587);
        assert_eq!(email.tls, SmtpTls::Starttls);
        assert_eq!(email.to.len(), 2);
        let ChannelConfig::Webhook(w) = &r[3].channel else {
            panic!("webhook")
        };
        assert_eq!(w.headers["Authorization"].expose(), "Bearer t");
        assert_eq!(r[4].channel.kind(), ChannelKind::Alertmanager);
        // Debug never shows a secret.
        let debug = format!("{r:?}");
        for secret in [
            "services/T/B/x",
            "rk-secret-1",
            "pw-secret-2",
            "hmac-secret-3",
            "Bearer t",
            "h.example",
            "am:9093",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn notify_section_has_defaults() {
        let c: NotifyConfig = toml::from_str("").unwrap();
        assert_eq!(c, NotifyConfig::default());
        assert_eq!(c.queue_capacity, 256);
        assert_eq!(c.log_capacity, 10_000);
        let c: NotifyConfig = toml::from_str(
            "retry = { attempt_timeout = \"3s\" }\nqueue_capacity = 8\n[[receivers]]\nname = \"a\"\nalertmanager = { url = \"http://am\" }\n",
        )
        .unwrap();
        assert_eq!(c.retry.attempt_timeout, std::time::Duration::from_secs(3));
        assert_eq!(c.retry.max_attempts, 5);
        assert_eq!(c.queue_capacity, 8);
        assert_eq!(c.receivers.len(), 1);
        assert!(toml::from_str::<NotifyConfig>("queue_capacty = 8").is_err());
    }

    #[test]
    fn a_receiver_with_two_channels_or_a_misspelt_one_is_refused() {
        let two = "[[receivers]]\nname = \"x\"\nslack = { webhook_url = \"https://a\" }\nalertmanager = { url = \"http://b\" }\n";
        let err = toml::from_str::<File>(two).err().unwrap().to_string();
        assert!(err.contains("found slack, alertmanager"), "{err}");
        let typo = "[[receivers]]\nname = \"x\"\nslak = { webhook_url = \"https://a\" }\n";
        assert!(toml::from_str::<File>(typo).is_err());
    }

    #[test]
    fn a_receiver_without_a_channel_is_refused() {
        let err = toml::from_str::<File>("[[receivers]]\nname = \"x\"\n")
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("receiver x: set exactly one of"),
            "{err}"
        );
    }
}
