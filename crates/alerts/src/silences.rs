//! Silences: matchers over alert labels with a start and an end. Validated as
//! `CreateSilenceRequest` says, each error naming its field.
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use crate::matcher::{MatchOp, Matcher, all_match};

/// Longest a silence may last, and farthest ahead it may start.
pub const MAX_AHEAD: Duration = Duration::from_secs(30 * 86_400);
const MAX_MATCHERS: usize = 32;
const MAX_LABEL: usize = 255;
const MAX_VALUE: usize = 1024;
const MAX_COMMENT: usize = 1024;

/// Where a silence is in its life (proto `SilenceState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SilenceState {
    Active,
    Pending,
    Expired,
}

/// A silence.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// `silences/{id}`; empty for a dry run.
    pub name: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: SystemTime,
    pub ends_at: SystemTime,
    pub created_by: String,
    pub comment: String,
    pub create_time: SystemTime,
}

impl Silence {
    pub fn state(&self, now: SystemTime) -> SilenceState {
        if now >= self.ends_at {
            SilenceState::Expired
        } else if now < self.starts_at {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    /// Whether it is in force now and covers these labels.
    pub fn covers(&self, labels: &BTreeMap<String, String>, now: SystemTime) -> bool {
        self.state(now) == SilenceState::Active && all_match(&self.matchers, labels)
    }
}

/// One matcher as requested (operator unset means EQUAL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatcherSpec {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
}

/// A silence as requested (proto `CreateSilenceRequest`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SilenceSpec {
    pub matchers: Vec<MatcherSpec>,
    /// Unset: now. In the past: now.
    pub starts_at: Option<SystemTime>,
    /// Exactly one of `duration` and `ends_at`.
    pub duration: Option<Duration>,
    pub ends_at: Option<SystemTime>,
    /// Who creates it (the audit actor).
    pub created_by: String,
    /// Empty: `reason` is used.
    pub comment: String,
    pub reason: String,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// The lead maps it to INVALID_ARGUMENT naming `field`.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// NOT_FOUND, resource type "warden.v1.Alert".
    #[error("alert {0} not found")]
    AlertNotFound(String),
    /// FAILED_PRECONDITION, reason ALERT_RESOLVED.
    #[error("alert {0} has resolved")]
    AlertResolved(String),
    /// NOT_FOUND, resource type "warden.v1.Silence".
    #[error("silence {0} not found")]
    SilenceNotFound(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> AlertError {
    AlertError::InvalidArgument {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a request and builds the silence it asks for (with an empty name).
pub fn build(spec: &SilenceSpec, now: SystemTime) -> Result<Silence, AlertError> {
    if spec.matchers.is_empty() || spec.matchers.len() > MAX_MATCHERS {
        return Err(invalid(
            "matchers",
            format!("1 to {MAX_MATCHERS} matchers are required"),
        ));
    }
    let mut matchers = Vec::with_capacity(spec.matchers.len());
    for (i, m) in spec.matchers.iter().enumerate() {
        if m.label.is_empty() || m.label.len() > MAX_LABEL {
            return Err(invalid(
                format!("matchers[{i}].label"),
                format!("required, at most {MAX_LABEL} bytes"),
            ));
        }
        if m.value.len() > MAX_VALUE {
            return Err(invalid(
                format!("matchers[{i}].value"),
                format!("at most {MAX_VALUE} bytes"),
            ));
        }
        let matcher = Matcher::new(&m.label, m.op, &m.value).map_err(|e| {
            invalid(
                format!("matchers[{i}].value"),
                format!("invalid regular expression: {e}"),
            )
        })?;
        matchers.push(matcher);
    }
    let narrows = matchers
        .iter()
        .any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Regex) && !m.matches_empty());
    if !narrows {
        return Err(invalid(
            "matchers",
            "at least one EQUAL or REGEX matcher must not match the empty string, so that a \
             silence never covers every alert",
        ));
    }
    let latest = now + MAX_AHEAD;
    let starts_at = match spec.starts_at {
        Some(t) if t > latest => {
            return Err(invalid("starts_at", "at most 30 days from now"));
        }
        Some(t) => t.max(now),
        None => now,
    };
    let ends_at = match (spec.duration, spec.ends_at) {
        (Some(d), None) => starts_at
            .checked_add(d)
            .ok_or_else(|| invalid("end", "too far ahead"))?,
        (None, Some(t)) => t,
        _ => {
            return Err(invalid(
                "end",
                "exactly one of duration and ends_at is required",
            ));
        }
    };
    if ends_at <= starts_at {
        return Err(invalid("end", "the end must be after the start"));
    }
    if ends_at > latest {
        return Err(invalid("end", "at most 30 days from now"));
    }
    let comment = if spec.comment.is_empty() {
        spec.reason.clone()
    } else {
        spec.comment.clone()
    };
    if comment.len() > MAX_COMMENT {
        return Err(invalid("comment", format!("at most {MAX_COMMENT} bytes")));
    }
    Ok(Silence {
        name: String::new(),
        matchers,
        starts_at,
        ends_at,
        created_by: spec.created_by.clone(),
        comment,
        create_time: now,
    })
}
