//! GetRecoveryPolicy and UpdateRecoveryPolicy: auto-recovery's settings
//! (`crate::recovery::RecoverySettings`) as the proto's `RecoveryPolicy`, and back.
//!
//! The mapping: `enabled` is "some group opted in" (auto-recovery is opt-in per group: with
//! `enabled` true and no `groups` it acts on every group, `*`); `max_restarts` is
//! `max_per_worker`; `window` is fixed at 1 h (the restart ledger's); `critical_for` is
//! `after_critical_checks` times the health interval (an update is rounded up to whole
//! checks); `mode` is POD only.
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{
    ControlService, RECOVERY,
    actions::{Failure, fingerprint},
    not_yet,
};
use crate::{
    api::{ApiError, convert::group_id},
    config::Role,
    proto::v1 as pb,
    recovery::{
        DEFAULT_AFTER_CRITICAL_CHECKS, DEFAULT_COOLDOWN, DEFAULT_MAX_PER_WORKER,
        DEFAULT_MAX_UNAVAILABLE_PER_GROUP, Policy, RecoverySettings, WINDOW,
    },
};

const MAX_COOLDOWN: Duration = Duration::from_secs(86_400);
const MIN_CRITICAL_FOR: Duration = Duration::from_secs(10);
const MAX_CRITICAL_FOR: Duration = Duration::from_secs(86_400);
const MAX_GROUPS: usize = 100;
/// Every field an update mask may name.
const PATHS: &[&str] = &[
    "enabled",
    "max_restarts",
    "window",
    "cooldown",
    "groups",
    "critical_for",
    "restart_lost",
    "mode",
    "max_unavailable_per_group",
];

fn pb_duration(d: Duration) -> prost_types::Duration {
    crate::api::convert::duration(d)
}

/// The policy in force, as the proto says it.
pub fn policy(p: &Policy, health_interval: Duration) -> pb::RecoveryPolicy {
    let s = p.settings();
    let (update_time, updated_by) = match p.changed() {
        Some((at, by)) => (Some(crate::api::convert::timestamp(*at)), by.clone()),
        None => (None, String::new()),
    };
    pb::RecoveryPolicy {
        enabled: s.enabled(),
        max_restarts: s.max_per_worker,
        window: Some(pb_duration(WINDOW)),
        cooldown: Some(pb_duration(s.cooldown)),
        groups: s.groups.clone(),
        critical_for: Some(pb_duration(
            health_interval.saturating_mul(s.after_critical_checks),
        )),
        restart_lost: s.restart_lost,
        mode: pb::RestartMode::Pod.into(),
        max_unavailable_per_group: s.max_unavailable_per_group,
        update_time,
        updated_by,
        etag: p.etag(),
    }
}

fn span(field: &str, d: Option<&prost_types::Duration>) -> Result<Option<Duration>, ApiError> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 => {
            Err(ApiError::invalid(field, "negative or malformed"))
        }
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

/// The request's groups as group-name globs: a resource name becomes its group's name.
fn groups(raw: &[String]) -> Result<Vec<String>, ApiError> {
    if raw.len() > MAX_GROUPS {
        return Err(ApiError::invalid(
            "policy.groups",
            format!("at most {MAX_GROUPS}"),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, g)| {
            let field = format!("policy.groups[{i}]");
            if g.is_empty() || g.len() > 255 {
                return Err(ApiError::invalid(field, "1 to 255 bytes"));
            }
            let name = group_id(&field, g)?;
            globset::Glob::new(&name)
                .map_err(|e| ApiError::invalid(field.clone(), format!("invalid glob: {e}")))?;
            Ok(name)
        })
        .collect()
}

/// The settings an update asks for: `current` with the fields of `mask` (all when empty)
/// taken from `new`, validated (errors name `policy.<field>` or `update_mask`).
pub fn apply(
    current: &RecoverySettings,
    new: &pb::RecoveryPolicy,
    mask: &[String],
    health_interval: Duration,
) -> Result<RecoverySettings, ApiError> {
    for path in mask {
        if !PATHS.contains(&path.as_str()) {
            return Err(ApiError::invalid(
                "update_mask",
                format!(
                    "unknown or output-only field {path:?}; one of: {}",
                    PATHS.join(", ")
                ),
            ));
        }
    }
    let all = mask.is_empty();
    let has = |f: &str| all || mask.iter().any(|p| p == f);
    let mut s = current.clone();
    if has("max_restarts") {
        s.max_per_worker = match new.max_restarts {
            0 => DEFAULT_MAX_PER_WORKER,
            n @ 1..=100 => n,
            _ => return Err(ApiError::invalid("policy.max_restarts", "1 to 100")),
        };
    }
    if has("window")
        && let Some(w) = span("policy.window", new.window.as_ref())?
        && w != WINDOW
    {
        return Err(ApiError::invalid(
            "policy.window",
            "only 1h is supported for now (the restart budget's window is fixed)",
        ));
    }
    if has("cooldown") {
        s.cooldown = match span("policy.cooldown", new.cooldown.as_ref())? {
            None => DEFAULT_COOLDOWN,
            Some(d) if d > MAX_COOLDOWN => {
                return Err(ApiError::invalid("policy.cooldown", "0 to 1 day"));
            }
            Some(d) => d,
        };
    }
    if has("critical_for") {
        s.after_critical_checks = match span("policy.critical_for", new.critical_for.as_ref())? {
            None => DEFAULT_AFTER_CRITICAL_CHECKS,
            Some(d) if !(MIN_CRITICAL_FOR..=MAX_CRITICAL_FOR).contains(&d) => {
                return Err(ApiError::invalid("policy.critical_for", "10s to 1 day"));
            }
            Some(d) => checks_for(d, health_interval),
        };
    }
    if has("restart_lost") {
        s.restart_lost = new.restart_lost;
    }
    if has("mode") {
        match pb::RestartMode::try_from(new.mode) {
            Ok(pb::RestartMode::Unspecified | pb::RestartMode::Pod) => {}
            Ok(other) => {
                return Err(ApiError::invalid(
                    "policy.mode",
                    format!(
                        "{} is not supported: auto-recovery restarts one pod (process) at a time",
                        other.as_str_name()
                    ),
                ));
            }
            Err(_) => {
                return Err(ApiError::invalid(
                    "policy.mode",
                    format!("unknown value {}", new.mode),
                ));
            }
        }
    }
    if has("max_unavailable_per_group") {
        s.max_unavailable_per_group = match new.max_unavailable_per_group {
            0 => DEFAULT_MAX_UNAVAILABLE_PER_GROUP,
            n @ 1..=1000 => n,
            _ => {
                return Err(ApiError::invalid(
                    "policy.max_unavailable_per_group",
                    "1 to 1000",
                ));
            }
        };
    }
    if has("groups") {
        s.groups = groups(&new.groups)?;
    }
    if has("enabled") {
        if !new.enabled {
            s.groups.clear();
        } else if s.groups.is_empty() {
            s.groups = vec!["*".to_string()];
        }
    }
    Ok(s)
}

/// CRITICAL checks in a row that last at least `d` (rounded up; at least 1).
fn checks_for(d: Duration, interval: Duration) -> u32 {
    let interval = interval.as_millis().max(1);
    let checks = d.as_millis().div_ceil(interval).max(1);
    u32::try_from(checks).unwrap_or(u32::MAX)
}

impl ControlService {
    pub(super) async fn get_policy(
        &self,
        request: Request<pb::GetRecoveryPolicyRequest>,
    ) -> Result<Response<pb::GetRecoveryPolicyResponse>, Status> {
        let Some(shared) = &self.recovery else {
            return not_yet(&request, "GetRecoveryPolicy", Role::Viewer, RECOVERY);
        };
        self.authorize(&request, "GetRecoveryPolicy", Role::Viewer, false)
            .await?;
        let p = shared.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Response::new(pb::GetRecoveryPolicyResponse {
            policy: Some(policy(&p, self.health_interval)),
        }))
    }

    pub(super) async fn update_policy(
        &self,
        request: Request<pb::UpdateRecoveryPolicyRequest>,
    ) -> Result<Response<pb::UpdateRecoveryPolicyResponse>, Status> {
        const ACTION: &str = "UpdateRecoveryPolicy";
        let Some(shared) = self.recovery.clone() else {
            return not_yet(&request, ACTION, Role::Admin, RECOVERY);
        };
        let call = self.call_info(&request, ACTION);
        let caller = self.authorize(&request, ACTION, Role::Admin, true).await?;
        let req = request.into_inner();
        let fp = fingerprint(ACTION, &req);
        match self.begin_key::<pb::UpdateRecoveryPolicyResponse>(&caller, &call.request_id, fp) {
            Ok(Some(replay)) => return Ok(Response::new(replay)),
            Ok(None) => {}
            Err(error) => return Err(error.into()),
        }
        let result = (|| -> Result<_, Failure> {
            super::common_fields(&req.reason, &req.request_id, 1)?;
            let new = req
                .policy
                .as_ref()
                .ok_or_else(|| ApiError::invalid("policy", "required"))?;
            let mask = req
                .update_mask
                .as_ref()
                .map(|m| m.paths.clone())
                .unwrap_or_default();
            let mut p = shared.lock().unwrap_or_else(|p| p.into_inner());
            if !new.etag.is_empty() && new.etag != p.etag() {
                return Err(ApiError::Aborted {
                    reason: "ETAG_MISMATCH",
                    holder: String::new(),
                    message: "the recovery policy changed since it was read (etag mismatch); \
                              read it again and retry"
                        .into(),
                }
                .into());
            }
            let settings = apply(p.settings(), new, &mask, self.health_interval)?;
            let answer = if req.dry_run {
                let mut preview = Policy::new(settings, call.time)
                    .map_err(|e| ApiError::invalid("policy.groups", e.to_string()))?;
                preview
                    .update_by(preview.settings().clone(), &caller.name, call.time)
                    .map_err(|e| ApiError::invalid("policy.groups", e.to_string()))?;
                // Nothing changed: the etag read before is still the one to send.
                pb::RecoveryPolicy {
                    etag: p.etag(),
                    ..policy(&preview, self.health_interval)
                }
            } else {
                p.update_by(settings, &caller.name, call.time)
                    .map_err(|e| ApiError::invalid("policy.groups", e.to_string()))?;
                policy(&p, self.health_interval)
            };
            Ok(pb::UpdateRecoveryPolicyResponse {
                policy: Some(answer),
                audit_id: call.audit_id.clone(),
                dry_run: req.dry_run,
            })
        })()
        .map(|resp| {
            (
                resp,
                vec!["recoveryPolicy".to_string()],
                Vec::new(),
                String::new(),
            )
        });
        self.conclude(&call, &caller, fp, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(30);

    fn full(p: pb::RecoveryPolicy) -> Result<RecoverySettings, ApiError> {
        apply(&RecoverySettings::default(), &p, &[], EVERY)
    }

    #[test]
    fn enabled_is_some_group_opted_in() {
        let off = full(pb::RecoveryPolicy {
            enabled: false,
            groups: vec!["web-*".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(off.groups.is_empty(), "disabled clears the groups");
        let every = full(pb::RecoveryPolicy {
            enabled: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(every.groups, vec!["*"]);
        let named = full(pb::RecoveryPolicy {
            enabled: true,
            groups: vec!["groups/celery/web%2Fa".into(), "batch-*".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(named.groups, vec!["web/a", "batch-*"]);
    }

    #[test]
    fn critical_for_rounds_up_to_whole_checks_and_reads_back() {
        let s = full(pb::RecoveryPolicy {
            enabled: true,
            critical_for: Some(pb_duration(Duration::from_secs(61))),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.after_critical_checks, 3);
        let p = Policy::new(s, std::time::UNIX_EPOCH).unwrap();
        assert_eq!(
            policy(&p, EVERY).critical_for,
            Some(pb_duration(Duration::from_secs(90)))
        );
    }

    #[test]
    fn out_of_bounds_values_name_their_field() {
        let field = |p: pb::RecoveryPolicy, mask: &[&str]| {
            let mask: Vec<String> = mask.iter().map(|s| s.to_string()).collect();
            match apply(&RecoverySettings::default(), &p, &mask, EVERY) {
                Err(ApiError::InvalidArgument { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        let d = |s| Some(pb_duration(Duration::from_secs(s)));
        assert_eq!(
            field(
                pb::RecoveryPolicy {
                    window: d(7200),
                    ..Default::default()
                },
                &[]
            ),
            "policy.window"
        );
        assert_eq!(
            field(
                pb::RecoveryPolicy {
                    mode: pb::RestartMode::Rollout.into(),
                    ..Default::default()
                },
                &[]
            ),
            "policy.mode"
        );
        assert_eq!(
            field(
                pb::RecoveryPolicy {
                    max_restarts: 101,
                    ..Default::default()
                },
                &[]
            ),
            "policy.max_restarts"
        );
        assert_eq!(
            field(
                pb::RecoveryPolicy {
                    critical_for: d(5),
                    ..Default::default()
                },
                &[]
            ),
            "policy.critical_for"
        );
        assert_eq!(
            field(pb::RecoveryPolicy::default(), &["etag"]),
            "update_mask"
        );
        assert_eq!(
            field(
                pb::RecoveryPolicy {
                    groups: vec!["groups/nope/x".into()],
                    ..Default::default()
                },
                &[]
            ),
            "policy.groups[0]"
        );
    }

    #[test]
    fn a_mask_changes_only_its_fields() {
        let current = RecoverySettings {
            groups: vec!["web".into()],
            max_per_worker: 7,
            ..RecoverySettings::default()
        };
        let s = apply(
            &current,
            &pb::RecoveryPolicy {
                max_unavailable_per_group: 4,
                ..Default::default()
            },
            &["max_unavailable_per_group".into()],
            EVERY,
        )
        .unwrap();
        assert_eq!(s.max_unavailable_per_group, 4);
        assert_eq!(
            (s.max_per_worker, s.groups.clone()),
            (7, vec!["web".to_string()])
        );
    }
}
