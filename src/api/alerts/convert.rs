//! The Alerts service's conversions, both ways: the alert engine's and the delivery log's
//! types into proto messages, request fields into the engine's terms (errors name the field).
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden_alerts::{Alert, AlertState, MatchOp, MatcherSpec, Rule, Silence, SilenceState};
use warden_core::history::Severity;
use warden_notify::{ChannelKind, Delivery, DeliveryState, NotifiedState};

use crate::{
    api::{
        ApiError,
        convert::{duration, finding, timestamp},
    },
    proto::v1 as pb,
};

pub fn severity(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// A request's minimum severity; UNSPECIFIED means none.
pub fn min_severity(raw: i32) -> Result<Option<Severity>, ApiError> {
    match pb::Severity::try_from(raw) {
        Ok(pb::Severity::Unspecified) => Ok(None),
        Ok(pb::Severity::Info) => Ok(Some(Severity::Info)),
        Ok(pb::Severity::Warning) => Ok(Some(Severity::Warning)),
        Ok(pb::Severity::Critical) => Ok(Some(Severity::Critical)),
        Err(_) => Err(ApiError::invalid(
            "min_severity",
            format!("unknown value {raw}"),
        )),
    }
}

pub fn alert_state(s: AlertState) -> pb::AlertState {
    match s {
        AlertState::Pending => pb::AlertState::Pending,
        AlertState::Firing => pb::AlertState::Firing,
        AlertState::Resolved => pb::AlertState::Resolved,
    }
}

pub fn alert_state_from(s: pb::AlertState) -> Option<AlertState> {
    match s {
        pb::AlertState::Unspecified => None,
        pb::AlertState::Pending => Some(AlertState::Pending),
        pb::AlertState::Firing => Some(AlertState::Firing),
        pb::AlertState::Resolved => Some(AlertState::Resolved),
    }
}

pub fn alert(a: &Alert) -> pb::Alert {
    pb::Alert {
        name: a.name.clone(),
        rule: a.rule_name(),
        severity: severity(a.severity).into(),
        state: alert_state(a.state).into(),
        acknowledged: a.acknowledged(),
        acknowledged_by: a.acknowledged_by.clone().unwrap_or_default(),
        acknowledged_at: a.acknowledged_at.map(timestamp),
        silenced: a.silenced(),
        silenced_by: a.silenced_by.clone(),
        worker: a
            .worker
            .as_ref()
            .map(|w| w.resource_name())
            .unwrap_or_default(),
        group: a.group.clone().unwrap_or_default(),
        summary: a.summary.clone(),
        description: a.description.clone(),
        labels: a.labels.clone().into_iter().collect(),
        annotations: a.annotations.clone().into_iter().collect(),
        started_at: Some(timestamp(a.started_at)),
        fired_at: a.fired_at.map(timestamp),
        resolved_at: a.resolved_at.map(timestamp),
        last_notified_at: a.last_notified_at.map(timestamp),
        findings: a.findings.iter().map(finding).collect(),
    }
}

/// A rule; `default_receivers` are where its alerts go when it names no receiver itself.
pub fn rule(r: &Rule, default_receivers: &[String]) -> pb::AlertRule {
    let receivers = if r.receivers.is_empty() {
        default_receivers.to_vec()
    } else {
        r.receivers.clone()
    };
    let nonzero = |d: Duration| (!d.is_zero()).then(|| duration(d));
    pb::AlertRule {
        name: r.name(),
        description: r.description.clone(),
        severity: severity(r.severity).into(),
        for_duration: nonzero(r.for_duration),
        keep_firing_for: nonzero(r.keep_firing_for),
        check: r.proto_check().to_string(),
        expression: r.expression.clone(),
        labels: r.labels.clone().into_iter().collect(),
        annotations: r.annotations.clone().into_iter().collect(),
        enabled: r.enabled,
        receivers,
    }
}

fn match_op(op: MatchOp) -> pb::MatchOperator {
    match op {
        MatchOp::Equal => pb::MatchOperator::Equal,
        MatchOp::NotEqual => pb::MatchOperator::NotEqual,
        MatchOp::Regex => pb::MatchOperator::Regex,
        MatchOp::NotRegex => pb::MatchOperator::NotRegex,
    }
}

pub fn silence_state(s: SilenceState) -> pb::SilenceState {
    match s {
        SilenceState::Active => pb::SilenceState::Active,
        SilenceState::Pending => pb::SilenceState::Pending,
        SilenceState::Expired => pb::SilenceState::Expired,
    }
}

pub fn silence_state_from(s: pb::SilenceState) -> Option<SilenceState> {
    match s {
        pb::SilenceState::Unspecified => None,
        pb::SilenceState::Active => Some(SilenceState::Active),
        pb::SilenceState::Pending => Some(SilenceState::Pending),
        pb::SilenceState::Expired => Some(SilenceState::Expired),
    }
}

pub fn silence(s: &Silence, now: SystemTime) -> pb::Silence {
    pb::Silence {
        name: s.name.clone(),
        matchers: s
            .matchers
            .iter()
            .map(|m| pb::SilenceMatcher {
                label: m.label.clone(),
                operator: match_op(m.op).into(),
                value: m.value.clone(),
            })
            .collect(),
        starts_at: Some(timestamp(s.starts_at)),
        ends_at: Some(timestamp(s.ends_at)),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
        state: silence_state(s.state(now)).into(),
        create_time: Some(timestamp(s.create_time)),
    }
}

/// The request's matchers; an unknown operator is INVALID_ARGUMENT naming
/// `matchers[i].operator` (the engine checks the rest).
pub fn matchers(ms: &[pb::SilenceMatcher]) -> Result<Vec<MatcherSpec>, ApiError> {
    ms.iter()
        .enumerate()
        .map(|(i, m)| {
            let op = match pb::MatchOperator::try_from(m.operator) {
                Ok(pb::MatchOperator::Unspecified | pb::MatchOperator::Equal) => MatchOp::Equal,
                Ok(pb::MatchOperator::NotEqual) => MatchOp::NotEqual,
                Ok(pb::MatchOperator::Regex) => MatchOp::Regex,
                Ok(pb::MatchOperator::NotRegex) => MatchOp::NotRegex,
                Err(_) => {
                    return Err(ApiError::invalid(
                        format!("matchers[{i}].operator"),
                        format!("unknown value {}", m.operator),
                    ));
                }
            };
            Ok(MatcherSpec {
                label: m.label.clone(),
                op,
                value: m.value.clone(),
            })
        })
        .collect()
}

/// A request's time; before 1970 or malformed is INVALID_ARGUMENT naming `field`.
pub fn time(field: &str, t: &prost_types::Timestamp) -> Result<SystemTime, ApiError> {
    let secs = u64::try_from(t.seconds).map_err(|_| ApiError::invalid(field, "before 1970"))?;
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| ApiError::invalid(field, "nanos out of range"))?;
    UNIX_EPOCH
        .checked_add(Duration::new(secs, nanos))
        .ok_or_else(|| ApiError::invalid(field, "too far ahead"))
}

/// A request's duration; negative or malformed is INVALID_ARGUMENT naming `field`.
pub fn span(field: &str, d: &prost_types::Duration) -> Result<Duration, ApiError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(ApiError::invalid(field, "negative or malformed"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn delivery_state(s: DeliveryState) -> pb::DeliveryState {
    match s {
        DeliveryState::Pending => pb::DeliveryState::Pending,
        DeliveryState::Sent => pb::DeliveryState::Sent,
        DeliveryState::Failed => pb::DeliveryState::Failed,
        DeliveryState::Retrying => pb::DeliveryState::Retrying,
        DeliveryState::Suppressed => pb::DeliveryState::Suppressed,
    }
}

pub fn delivery_state_from(s: pb::DeliveryState) -> Option<DeliveryState> {
    match s {
        pb::DeliveryState::Unspecified => None,
        pb::DeliveryState::Pending => Some(DeliveryState::Pending),
        pb::DeliveryState::Sent => Some(DeliveryState::Sent),
        pb::DeliveryState::Failed => Some(DeliveryState::Failed),
        pb::DeliveryState::Retrying => Some(DeliveryState::Retrying),
        pb::DeliveryState::Suppressed => Some(DeliveryState::Suppressed),
    }
}

/// The channel kinds of a filter; an unknown one is INVALID_ARGUMENT naming `channels[i]`.
pub fn channels(raw: &[String]) -> Result<Vec<ChannelKind>, ApiError> {
    raw.iter()
        .enumerate()
        .map(|(i, c)| {
            ChannelKind::parse(c).ok_or_else(|| {
                ApiError::invalid(
                    format!("channels[{i}]"),
                    "one of slack, pagerduty, email, webhook, alertmanager",
                )
            })
        })
        .collect()
}

/// One delivery as it concerns one of its alerts, named `alerts/{alert}/deliveries/{id}`.
pub fn delivery(d: &Delivery, alert: &str) -> pb::Delivery {
    pb::Delivery {
        name: format!("{alert}/deliveries/{}", d.id),
        alert: alert.to_string(),
        channel: d
            .channel
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        receiver: d.receiver.clone(),
        notified_state: match d.notified_state {
            NotifiedState::Firing => pb::AlertState::Firing,
            NotifiedState::Resolved => pb::AlertState::Resolved,
        }
        .into(),
        state: delivery_state(d.state).into(),
        attempts: d.attempts,
        last_error: d.last_error.clone().unwrap_or_default(),
        suppressed_reason: d.suppressed_reason.clone().unwrap_or_default(),
        create_time: Some(timestamp(d.create_time)),
        sent_at: d.sent_at.map(timestamp),
        next_attempt_at: d.next_attempt_at.map(timestamp),
    }
}
