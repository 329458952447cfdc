//! Slack incoming webhooks: a `text` line (what notifications and screen readers show) and
//! one attachment coloured by severity whose blocks list the alerts.
use serde_json::{Value, json};
use warden_core::{
    history::Severity,
    ports::{BoxFuture, Notification, Notifier, PortError},
};

use super::{BuildError, ChannelKind, Target, check_url, headline, http_client, marker, send};
use crate::{config::SlackConfig, secret::Secret};

/// Alerts listed one by one; more are summed up in one line (Slack caps blocks at 50).
pub const MAX_LISTED_ALERTS: usize = 20;

pub const COLOR_RESOLVED: &str = "#2eb886";
pub const COLOR_CRITICAL: &str = "#d00000";
pub const COLOR_WARNING: &str = "#daa038";
pub const COLOR_INFO: &str = "#439fe0";

pub struct SlackNotifier {
    target: Target,
    webhook_url: Secret,
    client: reqwest::Client,
}

impl SlackNotifier {
    pub fn new(
        receiver: &str,
        config: &SlackConfig,
        timeout: std::time::Duration,
    ) -> Result<Self, BuildError> {
        check_url(receiver, "slack.webhook_url", config.webhook_url.expose())?;
        Ok(Self {
            target: Target {
                kind: ChannelKind::Slack,
                receiver: receiver.to_owned(),
                timeout,
            },
            webhook_url: config.webhook_url.clone(),
            client: http_client(receiver, timeout)?,
        })
    }
}

impl Notifier for SlackNotifier {
    fn channel(&self) -> &str {
        &self.target.receiver
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let request = self.client.post(self.webhook_url.expose()).json(&render(n));
            send(&self.target, request, &[&self.webhook_url]).await
        })
    }
}

/// The colour bar: green when resolved, else by the highest severity.
pub fn color(n: &Notification) -> &'static str {
    if n.resolved {
        return COLOR_RESOLVED;
    }
    match super::top_severity(n) {
        Severity::Critical => COLOR_CRITICAL,
        Severity::Warning => COLOR_WARNING,
        Severity::Info => COLOR_INFO,
    }
}

/// The webhook's JSON body.
pub fn render(n: &Notification) -> Value {
    let text = format!("{} {}", marker(n), headline(n));
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("*{}*", escape(&text))},
    })];
    for alert in n.alerts.iter().take(MAX_LISTED_ALERTS) {
        let state = if alert.firing { "firing" } else { "resolved" };
        let mut line = format!(
            "*[{}]* `{}` {} ({state})",
            super::severity_name(alert.severity).to_uppercase(),
            escape(&alert.rule),
            escape(&alert.summary),
        );
        if !alert.description.is_empty() {
            line.push('\n');
            line.push_str(&escape(&alert.description));
        }
        if !alert.labels.is_empty() {
            line.push('\n');
            line.push_str(&escape(&super::label_list(&alert.labels)));
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": line}}));
    }
    if n.alerts.len() > MAX_LISTED_ALERTS {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("… and {} more", n.alerts.len() - MAX_LISTED_ALERTS)}],
        }));
    }
    if !n.common_labels.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": escape(&super::label_list(&n.common_labels))}],
        }));
    }
    json!({
        "text": text,
        "attachments": [{"color": color(n), "fallback": text, "blocks": blocks}],
    })
}

/// Slack's mrkdwn reserves `&`, `<` and `>`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::fixtures::*;

    #[test]
    fn firing_critical_is_red_and_lists_each_alert() {
        let n = notification(vec![
            alert("a1", "worker_lost", Severity::Critical, "w-1"),
            alert("a2", "worker_lost", Severity::Warning, "w-2"),
        ]);
        let v = render(&n);
        assert_eq!(v["text"], "[FIRING:2] 2 alerts: worker_lost");
        let att = &v["attachments"][0];
        assert_eq!(att["color"], COLOR_CRITICAL);
        let blocks = att["blocks"].as_array().unwrap();
        // Title, two alerts, common labels.
        assert_eq!(blocks.len(), 4);
        let first = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(first.starts_with("*[CRITICAL]* `worker_lost` Worker w-1 lost (firing)"));
        assert!(first.contains("No heartbeat from w-1"));
        assert!(first.contains("worker=w-1"));
        assert!(
            blocks[2]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("[WARNING]")
        );
    }

    #[test]
    fn resolved_is_green_and_escalated_is_marked() {
        let n = resolve(notification(vec![alert(
            "a1",
            "worker_lost",
            Severity::Critical,
            "w-1",
        )]));
        let v = render(&n);
        assert_eq!(v["text"], "[RESOLVED:1] Worker w-1 lost");
        assert_eq!(v["attachments"][0]["color"], COLOR_RESOLVED);

        let mut n = notification(vec![alert("a1", "worker_lost", Severity::Warning, "w-1")]);
        n.escalated = true;
        let v = render(&n);
        assert_eq!(v["text"], "[ESCALATED] [FIRING:1] Worker w-1 lost");
        assert_eq!(v["attachments"][0]["color"], COLOR_WARNING);
    }

    #[test]
    fn long_lists_are_cut_and_mrkdwn_is_escaped() {
        let alerts = (0..25)
            .map(|i| alert(&format!("a{i}"), "worker_lost", Severity::Info, "<w&>"))
            .collect();
        let v = render(&notification(alerts));
        let blocks = v["attachments"][0]["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 1 + MAX_LISTED_ALERTS + 2);
        assert_eq!(
            blocks[MAX_LISTED_ALERTS + 1]["elements"][0]["text"],
            "… and 5 more"
        );
        assert!(
            blocks[1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("&lt;w&amp;&gt;")
        );
        assert_eq!(v["attachments"][0]["color"], COLOR_INFO);
    }
}
