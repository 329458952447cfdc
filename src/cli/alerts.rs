//! `warden alerts`: list alerts (`list`), acknowledge one (`ack`, `unack`), silence alerts by
//! their labels (`silence worker=w1@h rule=worker_lost --for 2h`). The acting verbs take
//! `--dry-run`, `--reason` and `--request-id` like the control verbs, and print a table or,
//! with `--output json`, JSON.
use std::time::Duration;

use serde_json::{Value, json};

use super::{ClientArgs, ClientError, Output, connect, parse_duration, request};
use crate::proto::v1::{self as pb, alerts_client::AlertsClient};

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: AlertsCommand,
}

/// What the acting verbs take.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertActing {
    /// Say what would happen, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why (recorded in the audit trail).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Idempotency key: the same key again within 24 h is not acted on twice.
    #[arg(long, default_value = "")]
    pub request_id: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Alerts pending or firing (with --all, resolved ones too), newest first.
    List {
        /// Include resolved alerts.
        #[arg(long)]
        all: bool,
        /// Only alerts of this worker (short id or resource name).
        #[arg(long, default_value = "")]
        worker: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Acknowledge an alert: no more re-notification or escalation (role operator).
    Ack {
        /// `alerts/{id}`.
        name: String,
        #[command(flatten)]
        acting: AlertActing,
    },
    /// Withdraw an alert's acknowledgement (role operator).
    Unack {
        /// `alerts/{id}`.
        name: String,
        #[command(flatten)]
        acting: AlertActing,
    },
    /// Silence the alerts whose labels match all the matchers (role operator).
    Silence {
        /// LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX or LABEL!~REGEX (e.g. worker=w1@host).
        #[arg(required = true, value_parser = parse_matcher)]
        matchers: Vec<Matcher>,
        /// How long the silence lasts (e.g. 30m, 2h).
        #[arg(long = "for", value_parser = parse_duration, default_value = "1h")]
        duration: Duration,
        /// Shown with the silence (default: the reason).
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        acting: AlertActing,
    },
}

/// A silence matcher as typed on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub label: String,
    pub operator: pb::MatchOperator,
    pub value: String,
}

/// `LABEL=VALUE`, `LABEL!=VALUE`, `LABEL=~REGEX`, `LABEL!~REGEX`.
pub fn parse_matcher(s: &str) -> Result<Matcher, String> {
    let ops = [
        ("!~", pb::MatchOperator::NotRegex),
        ("=~", pb::MatchOperator::Regex),
        ("!=", pb::MatchOperator::NotEqual),
        ("=", pb::MatchOperator::Equal),
    ];
    let (at, token, operator) = ops
        .iter()
        .filter_map(|(token, op)| s.find(token).map(|at| (at, *token, *op)))
        .min_by_key(|(at, token, _)| (*at, std::cmp::Reverse(token.len())))
        .ok_or_else(|| format!("expected LABEL=VALUE (or !=, =~, !~), got {s:?}"))?;
    let label = &s[..at];
    if label.is_empty() {
        return Err(format!("no label before {token:?} in {s:?}"));
    }
    Ok(Matcher {
        label: label.to_string(),
        operator,
        value: s[at + token.len()..].to_string(),
    })
}

fn state(v: i32) -> &'static str {
    match pb::AlertState::try_from(v) {
        Ok(pb::AlertState::Pending) => "PENDING",
        Ok(pb::AlertState::Firing) => "FIRING",
        Ok(pb::AlertState::Resolved) => "RESOLVED",
        _ => "UNKNOWN",
    }
}

fn severity(v: i32) -> &'static str {
    match pb::Severity::try_from(v) {
        Ok(pb::Severity::Info) => "info",
        Ok(pb::Severity::Warning) => "warning",
        Ok(pb::Severity::Critical) => "critical",
        _ => "",
    }
}

fn alert_json(a: &pb::Alert) -> Value {
    json!({
        "name": a.name,
        "rule": a.rule,
        "severity": severity(a.severity),
        "state": state(a.state),
        "acknowledged": a.acknowledged,
        "acknowledged_by": a.acknowledged_by,
        "silenced": a.silenced,
        "silenced_by": a.silenced_by,
        "worker": a.worker,
        "group": a.group,
        "summary": a.summary,
        "labels": a.labels,
        "started_at": a.started_at.map(|t| t.seconds),
    })
}

fn print_alerts(output: Output, alerts: &[pb::Alert]) {
    match output {
        Output::Json => println!("{}", Value::Array(alerts.iter().map(alert_json).collect())),
        Output::Table => {
            println!(
                "{:<28} {:<20} {:<9} {:<9} {:<5} {:<5} SUMMARY",
                "NAME", "RULE", "SEVERITY", "STATE", "ACK", "SIL"
            );
            for a in alerts {
                println!(
                    "{:<28} {:<20} {:<9} {:<9} {:<5} {:<5} {}",
                    a.name,
                    a.rule.trim_start_matches("alertRules/"),
                    severity(a.severity),
                    state(a.state),
                    if a.acknowledged { "yes" } else { "" },
                    if a.silenced { "yes" } else { "" },
                    a.summary
                );
            }
        }
    }
}

/// The outcome of an acting verb: JSON, or a line per fact.
fn print_acted(output: Output, what: &str, dry_run: bool, audit_id: &str, body: Value) {
    match output {
        Output::Json => println!(
            "{}",
            json!({ "dry_run": dry_run, "audit_id": audit_id, what: body })
        ),
        Output::Table => {
            if dry_run {
                println!("dry run: nothing changed");
            }
            println!("{what}: {body}");
            println!("audit id: {audit_id}");
        }
    }
}

pub async fn run(args: AlertsArgs) -> Result<(), ClientError> {
    let mut client = AlertsClient::new(connect(&args.client).await?);
    let output = args.client.output;
    match args.command {
        AlertsCommand::List { all, worker, limit } => {
            let states = if all {
                [
                    pb::AlertState::Pending,
                    pb::AlertState::Firing,
                    pb::AlertState::Resolved,
                ]
                .into_iter()
                .map(i32::from)
                .collect()
            } else {
                Vec::new()
            };
            let r = client
                .list_alerts(request(
                    &args.client,
                    pb::ListAlertsRequest {
                        states,
                        worker,
                        page_size: limit,
                        ..Default::default()
                    },
                )?)
                .await?
                .into_inner();
            print_alerts(output, &r.alerts);
        }
        AlertsCommand::Ack { name, acting } => {
            let r = client
                .acknowledge_alert(request(
                    &args.client,
                    pb::AcknowledgeAlertRequest {
                        name,
                        reason: acting.reason,
                        dry_run: acting.dry_run,
                        request_id: acting.request_id,
                    },
                )?)
                .await?
                .into_inner();
            let alert = r.alert.as_ref().map(alert_json).unwrap_or(Value::Null);
            print_acted(output, "alert", r.dry_run, &r.audit_id, alert);
        }
        AlertsCommand::Unack { name, acting } => {
            let r = client
                .unacknowledge_alert(request(
                    &args.client,
                    pb::UnacknowledgeAlertRequest {
                        name,
                        reason: acting.reason,
                        dry_run: acting.dry_run,
                        request_id: acting.request_id,
                    },
                )?)
                .await?
                .into_inner();
            let alert = r.alert.as_ref().map(alert_json).unwrap_or(Value::Null);
            print_acted(output, "alert", r.dry_run, &r.audit_id, alert);
        }
        AlertsCommand::Silence {
            matchers,
            duration,
            comment,
            acting,
        } => {
            let r = client
                .create_silence(request(
                    &args.client,
                    pb::CreateSilenceRequest {
                        matchers: matchers
                            .into_iter()
                            .map(|m| pb::SilenceMatcher {
                                label: m.label,
                                operator: m.operator.into(),
                                value: m.value,
                            })
                            .collect(),
                        end: Some(pb::create_silence_request::End::Duration(
                            crate::api::convert::duration(duration),
                        )),
                        comment,
                        reason: acting.reason,
                        dry_run: acting.dry_run,
                        request_id: acting.request_id,
                        ..Default::default()
                    },
                )?)
                .await?
                .into_inner();
            let name = r
                .silence
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            let body = json!({
                "name": name,
                "alerts": r.alerts,
                "alerts_total": r.alerts_total,
            });
            print_acted(output, "silence", r.dry_run, &r.audit_id, body);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_read_every_operator() {
        let m = |s| parse_matcher(s).unwrap();
        assert_eq!(
            m("worker=w1@h"),
            Matcher {
                label: "worker".into(),
                operator: pb::MatchOperator::Equal,
                value: "w1@h".into()
            }
        );
        assert_eq!(m("rule!=heartbeat").operator, pb::MatchOperator::NotEqual);
        assert_eq!(m("worker=~w1.*").operator, pb::MatchOperator::Regex);
        assert_eq!(m("worker=~w1.*").value, "w1.*");
        assert_eq!(m("worker!~w1.*").operator, pb::MatchOperator::NotRegex);
        assert_eq!(m("a=b=c").value, "b=c", "the first operator splits");
        assert!(parse_matcher("worker").is_err());
        assert!(parse_matcher("=x").is_err());
    }
}
