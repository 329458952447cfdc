//! Each verb's own fields, checked and turned into the action `crate::control` carries out.
//! A bad field is INVALID_ARGUMENT naming it.
use std::time::Duration;

use crate::{
    api::ApiError,
    control::{LongAction, Pacing, RestartHow, SyncAction},
    proto::v1 as pb,
};

const MAX_QUEUES: usize = 100;
const MAX_NAME_BYTES: usize = 255;
const MAX_TASK_IDS: usize = 1000;
const SIGNALS: &[&str] = &[
    "SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2",
];
/// Drain timeout when unset, and its bounds.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_PAUSE_BETWEEN_BATCHES: Duration = Duration::from_secs(3600);
const DEFAULT_BATCH: usize = 10;

fn queues(queues: &[String]) -> Result<Vec<String>, ApiError> {
    if queues.len() > MAX_QUEUES {
        return Err(ApiError::invalid("queues", format!("at most {MAX_QUEUES}")));
    }
    for (i, q) in queues.iter().enumerate() {
        if q.is_empty() || q.len() > MAX_NAME_BYTES {
            return Err(ApiError::invalid(
                format!("queues[{i}]"),
                format!("1 to {MAX_NAME_BYTES} bytes"),
            ));
        }
    }
    Ok(queues.to_vec())
}

fn task_name(name: &str) -> Result<String, ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApiError::invalid(
            "task_name",
            format!("required, at most {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(name.to_string())
}

pub fn duration(
    field: &str,
    d: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, ApiError> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => Err(ApiError::invalid(field, "negative")),
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

pub fn pause(r: &pb::PauseConsumingRequest) -> Result<SyncAction, ApiError> {
    Ok(SyncAction::Pause {
        queues: queues(&r.queues)?,
    })
}

pub fn resume(r: &pb::ResumeConsumingRequest) -> Result<SyncAction, ApiError> {
    Ok(SyncAction::Resume {
        queues: queues(&r.queues)?,
    })
}

pub fn pool_size(r: &pb::SetPoolSizeRequest) -> Result<SyncAction, ApiError> {
    if !(1..=1000).contains(&r.size) {
        return Err(ApiError::invalid("size", "required: 1 to 1000"));
    }
    Ok(SyncAction::PoolSize { size: r.size })
}

/// `N`, `N/s`, `N/m` or `N/h`, N a non-negative number ("0" removes the limit).
fn valid_rate(rate: &str) -> bool {
    let number = rate
        .strip_suffix("/s")
        .or_else(|| rate.strip_suffix("/m"))
        .or_else(|| rate.strip_suffix("/h"))
        .unwrap_or(rate);
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number
            .parse::<f64>()
            .is_ok_and(|n| n.is_finite() && n >= 0.0)
}

pub fn rate_limit(r: &pb::SetRateLimitRequest) -> Result<SyncAction, ApiError> {
    let task = task_name(&r.task_name)?;
    if !valid_rate(&r.rate) {
        return Err(ApiError::invalid(
            "rate",
            "a number, optionally followed by /s, /m or /h (e.g. \"10/m\"); \"0\" removes the limit",
        ));
    }
    Ok(SyncAction::RateLimit {
        task,
        rate: r.rate.clone(),
    })
}

pub fn time_limit(r: &pb::SetTimeLimitRequest) -> Result<SyncAction, ApiError> {
    let task = task_name(&r.task_name)?;
    let secs = |d: Option<Duration>| d.filter(|d| !d.is_zero()).map(|d| d.as_secs_f64());
    let soft = secs(duration("soft", r.soft.as_ref())?);
    let hard = secs(duration("hard", r.hard.as_ref())?);
    if let (Some(s), Some(h)) = (soft, hard)
        && s >= h
    {
        return Err(ApiError::invalid("soft", "must be shorter than `hard`"));
    }
    Ok(SyncAction::TimeLimit { task, soft, hard })
}

pub fn revoke(r: &pb::RevokeTasksRequest) -> Result<SyncAction, ApiError> {
    if r.task_ids.is_empty() || r.task_ids.len() > MAX_TASK_IDS {
        return Err(ApiError::invalid(
            "task_ids",
            format!("required: 1 to {MAX_TASK_IDS} ids"),
        ));
    }
    for (i, id) in r.task_ids.iter().enumerate() {
        if id.is_empty() || id.len() > MAX_NAME_BYTES {
            return Err(ApiError::invalid(
                format!("task_ids[{i}]"),
                format!("1 to {MAX_NAME_BYTES} bytes"),
            ));
        }
    }
    if !r.signal.is_empty() && !r.terminate {
        return Err(ApiError::invalid("signal", "only with `terminate`"));
    }
    if !r.signal.is_empty() && !SIGNALS.contains(&r.signal.as_str()) {
        return Err(ApiError::invalid(
            "signal",
            format!("one of {}", SIGNALS.join(", ")),
        ));
    }
    Ok(SyncAction::Revoke {
        ids: r.task_ids.clone(),
        terminate: r.terminate,
        signal: r.terminate.then(|| {
            if r.signal.is_empty() {
                "SIGTERM".to_string()
            } else {
                r.signal.clone()
            }
        }),
    })
}

pub fn cordon(r: &pb::CordonWorkersRequest) -> Result<SyncAction, ApiError> {
    Ok(SyncAction::Cordon {
        reason: if r.reason.is_empty() {
            "cordoned".into()
        } else {
            r.reason.clone()
        },
    })
}

pub fn uncordon(_: &pb::UncordonWorkersRequest) -> Result<SyncAction, ApiError> {
    Ok(SyncAction::Uncordon)
}

fn restart_how(field: &str, mode: i32) -> Result<RestartHow, ApiError> {
    match pb::RestartMode::try_from(mode) {
        Ok(pb::RestartMode::Unspecified | pb::RestartMode::Pod) => Ok(RestartHow::Instance),
        Ok(pb::RestartMode::Rollout) => Ok(RestartHow::Rollout),
        Ok(pb::RestartMode::Pool) => Ok(RestartHow::Pool),
        Err(_) => Err(ApiError::invalid(field, format!("unknown mode {mode}"))),
    }
}

pub fn restart(r: &pb::RestartWorkersRequest) -> Result<LongAction, ApiError> {
    Ok(LongAction::Restart(restart_how("mode", r.mode)?))
}

pub fn drain(r: &pb::DrainWorkersRequest) -> Result<LongAction, ApiError> {
    let how = restart_how("mode", r.mode)?;
    if how == RestartHow::Rollout {
        return Err(ApiError::invalid(
            "mode",
            "ROLLOUT cannot follow a drain (it replaces pods that were not drained)",
        ));
    }
    let timeout = match duration("timeout", r.timeout.as_ref())? {
        None => DEFAULT_DRAIN_TIMEOUT,
        Some(d) if d < Duration::from_secs(1) => {
            return Err(ApiError::invalid("timeout", "at least 1 s"));
        }
        Some(d) => d.min(MAX_DRAIN_TIMEOUT),
    };
    Ok(LongAction::Drain { how, timeout })
}

pub fn shutdown(r: &pb::ShutdownWorkersRequest) -> Result<LongAction, ApiError> {
    let grace =
        duration("grace_period", r.grace_period.as_ref())?.map(|d| d.min(MAX_DRAIN_TIMEOUT));
    Ok(LongAction::Shutdown { grace })
}

/// The request's pacing with defaults applied (batch lowered to `max_targets`).
pub fn pacing(p: Option<&pb::Pacing>, max_targets: usize) -> Result<Pacing, ApiError> {
    let p = p.cloned().unwrap_or_default();
    let batch_size = match p.batch_size {
        0 => DEFAULT_BATCH,
        n => n as usize,
    }
    .min(max_targets.max(1));
    let max_unavailable = match p.max_unavailable {
        0 => batch_size,
        n => n as usize,
    };
    let pause = duration(
        "pacing.pause_between_batches",
        p.pause_between_batches.as_ref(),
    )?
    .unwrap_or_default()
    .min(MAX_PAUSE_BETWEEN_BATCHES);
    Ok(Pacing {
        batch_size,
        max_unavailable,
        pause_between_batches: pause,
        max_failures: p.max_failures as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_celery_rate_strings() {
        for ok in ["0", "10", "10/m", "0.5/s", "100/h"] {
            assert!(valid_rate(ok), "{ok}");
        }
        for bad in ["", "/m", "ten/m", "10/d", "-1", "1e3", "10/ m"] {
            assert!(!valid_rate(bad), "{bad}");
        }
    }

    #[test]
    fn a_signal_needs_terminate_and_a_known_name() {
        let mut r = pb::RevokeTasksRequest {
            task_ids: vec!["t1".into()],
            signal: "SIGKILL".into(),
            ..Default::default()
        };
        assert!(revoke(&r).is_err());
        r.terminate = true;
        assert!(revoke(&r).is_ok());
        r.signal = "SIGFOO".into();
        assert!(revoke(&r).is_err());
    }

    #[test]
    fn pacing_defaults_follow_the_contract() {
        let p = pacing(None, 1000).unwrap();
        assert_eq!((p.batch_size, p.max_unavailable), (10, 10));
        let p = pacing(
            Some(&pb::Pacing {
                batch_size: 50,
                max_unavailable: 2,
                ..Default::default()
            }),
            20,
        )
        .unwrap();
        assert_eq!((p.batch_size, p.max_unavailable), (20, 2));
    }
}
