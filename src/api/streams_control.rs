//! The Redis Streams verbs of `warden.v1.Control`: ReclaimPending (operator), DiscardPending and
//! RunJanitor (admin). Authorised and audited like the other Control verbs (see `control`);
//! the work is done by `warden_streams`, which decides atomically inside Redis.
use std::time::Duration;

use tonic::{Request, Response, Status};
use warden_streams::{
    control::{ControlError, StreamsControl},
    janitor::JanitorReport,
    pending::{self, DiscardRequest, ReclaimRequest},
};

use super::{
    ApiError, auth,
    control::{Audited, ControlService, authorize},
    convert,
};
use crate::{config::Role, proto::v1 as pb};

const MAX_REASON_BYTES: usize = 1024;
const MAX_REQUEST_ID_BYTES: usize = 128;
const MAX_NAME_BYTES: usize = 1024;
const DEFAULT_MAX_ENTRIES: usize = 1000;
const MAX_MAX_ENTRIES: usize = 10_000;
const MAX_MIN_IDLE: Duration = Duration::from_secs(30 * 86_400);
/// ReclaimPending's per-stream floor: entries idle less than this are being worked on.
pub const DEFAULT_RECLAIM_MIN_IDLE: Duration = warden_streams::pending::RECLAIM_MIN_IDLE;
/// DiscardPending touches only entries idle this long unless told otherwise.
pub const DEFAULT_DISCARD_MIN_IDLE: Duration = Duration::from_secs(3600);

impl Audited for pb::ReclaimPendingRequest {
    fn reason(&self) -> &str {
        &self.reason
    }
    fn targets(&self) -> Vec<String> {
        vec![format!("stream:{}:{}", self.stream, self.group)]
    }
}

impl Audited for pb::DiscardPendingRequest {
    fn reason(&self) -> &str {
        &self.reason
    }
    fn targets(&self) -> Vec<String> {
        vec![format!("stream:{}:{}", self.stream, self.group)]
    }
}

impl Audited for pb::RunJanitorRequest {
    fn reason(&self) -> &str {
        &self.reason
    }
    fn targets(&self) -> Vec<String> {
        vec!["streams".into()]
    }
}

fn common(reason: &str, request_id: &str) -> Result<(), ApiError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::invalid(
            "reason",
            format!("longer than {MAX_REASON_BYTES} bytes"),
        ));
    }
    if request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(ApiError::invalid(
            "request_id",
            format!("longer than {MAX_REQUEST_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn name(field: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(ApiError::invalid(
            field,
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(value.to_string())
}

fn min_idle(
    field: &str,
    value: Option<&prost_types::Duration>,
    default: Duration,
) -> Result<Duration, ApiError> {
    match value {
        None => Ok(default),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(ApiError::invalid(field, "must not be negative"))
        }
        Some(d) => {
            let d = Duration::new(d.seconds as u64, d.nanos.clamp(0, 999_999_999) as u32);
            if d > MAX_MIN_IDLE {
                Err(ApiError::invalid(field, "at most 30 days"))
            } else {
                Ok(d)
            }
        }
    }
}

fn max_entries(n: u32) -> usize {
    match n {
        0 => DEFAULT_MAX_ENTRIES,
        n => (n as usize).min(MAX_MAX_ENTRIES),
    }
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::NotFound(message) => ApiError::NotFound {
            resource_type: "warden.v1.Queue",
            name: message.clone(),
            message,
        },
        ControlError::NoLiveConsumer(message) => ApiError::FailedPrecondition {
            reason: "NO_LIVE_CONSUMER",
            subject: "to_consumer".into(),
            message,
        },
        ControlError::Unavailable(reason) => ApiError::Unavailable {
            dependency: warden_streams::SOURCE,
            reason,
        },
    }
}

fn streams_off() -> ApiError {
    ApiError::NotFound {
        resource_type: "warden.v1.Queue",
        name: "streams".into(),
        message: "the Redis Streams backend is off (no --streams configured)".into(),
    }
}

fn entry(e: pending::PendingEntry) -> pb::PendingEntry {
    pb::PendingEntry {
        id: e.id,
        consumer: e.consumer,
        idle: Some(convert::duration(e.idle)),
        delivery_count: e.deliveries,
    }
}

fn janitor_response(audit_id: String, r: JanitorReport) -> pb::RunJanitorResponse {
    pb::RunJanitorResponse {
        audit_id,
        dry_run: r.dry_run,
        trims: r
            .trims
            .into_iter()
            .map(|t| pb::StreamTrim {
                stream: t.stream,
                bound: t.bound.unwrap_or_default(),
                entries: t.entries,
            })
            .collect(),
        deleted_consumers: r
            .deleted
            .into_iter()
            .map(|c| pb::StaleConsumer {
                stream: c.stream,
                group: c.group,
                consumer: c.consumer,
                idle: Some(convert::duration(c.idle)),
            })
            .collect(),
    }
}

/// Audits a call that was allowed, with its outcome; returns the audit id.
fn audited<T: Audited>(caller: &auth::Caller, action: &str, req: &T, outcome: &str) -> String {
    auth::audit(
        Some(caller),
        action,
        &req.targets(),
        req.reason(),
        true,
        outcome,
    )
}

impl ControlService {
    /// Serves the Streams verbs with `streams` (`None`: they answer NOT_FOUND, Streams off).
    pub fn with_streams(mut self, streams: Option<StreamsControl>) -> Self {
        self.streams = streams;
        self
    }

    fn streams_control(&self) -> Result<&StreamsControl, ApiError> {
        self.streams.as_ref().ok_or_else(streams_off)
    }

    pub(super) async fn handle_reclaim_pending(
        &self,
        request: Request<pb::ReclaimPendingRequest>,
    ) -> Result<Response<pb::ReclaimPendingResponse>, Status> {
        const ACTION: &str = "ReclaimPending";
        let caller = authorize(&request, ACTION, Role::Operator)?;
        let req = request.into_inner();
        let result = async {
            common(&req.reason, &req.request_id)?;
            let r = ReclaimRequest {
                stream: name("stream", &req.stream)?,
                group: name("group", &req.group)?,
                from: req
                    .from_consumers
                    .iter()
                    .enumerate()
                    .map(|(i, c)| name(&format!("from_consumers[{i}]"), c))
                    .collect::<Result<_, _>>()?,
                to: (!req.to_consumer.is_empty())
                    .then(|| name("to_consumer", &req.to_consumer))
                    .transpose()?,
                min_idle: min_idle("min_idle", req.min_idle.as_ref(), DEFAULT_RECLAIM_MIN_IDLE)?,
                max_entries: max_entries(req.max_entries),
                dry_run: req.dry_run,
            };
            self.streams_control()?
                .reclaim(&r)
                .await
                .map_err(control_error)
        }
        .await;
        let outcome = match &result {
            Ok(r) => format!(
                "{} {} entries to {}",
                if req.dry_run { "would move" } else { "moved" },
                r.entries.len(),
                r.to
            ),
            Err(e) => e.to_string(),
        };
        let audit_id = audited(&caller, ACTION, &req, &outcome);
        let r = result?;
        Ok(Response::new(pb::ReclaimPendingResponse {
            audit_id,
            dry_run: req.dry_run,
            to_consumer: r.to,
            entries: r.entries.into_iter().map(entry).collect(),
            skipped_consumers: r.skipped,
            truncated: r.truncated,
        }))
    }

    pub(super) async fn handle_discard_pending(
        &self,
        request: Request<pb::DiscardPendingRequest>,
    ) -> Result<Response<pb::DiscardPendingResponse>, Status> {
        const ACTION: &str = "DiscardPending";
        let caller = authorize(&request, ACTION, Role::Admin)?;
        let req = request.into_inner();
        let result = async {
            common(&req.reason, &req.request_id)?;
            if req.consumers.is_empty() {
                return Err(ApiError::invalid(
                    "consumers",
                    "name at least one dead consumer",
                ));
            }
            for (i, id) in req.entry_ids.iter().enumerate() {
                if !pending::valid_id(id) {
                    return Err(ApiError::invalid(
                        format!("entry_ids[{i}]"),
                        "not a stream entry id ({ms}-{seq})",
                    ));
                }
            }
            let r = DiscardRequest {
                stream: name("stream", &req.stream)?,
                group: name("group", &req.group)?,
                consumers: req
                    .consumers
                    .iter()
                    .enumerate()
                    .map(|(i, c)| name(&format!("consumers[{i}]"), c))
                    .collect::<Result<_, _>>()?,
                entry_ids: req.entry_ids.clone(),
                min_idle: min_idle("min_idle", req.min_idle.as_ref(), DEFAULT_DISCARD_MIN_IDLE)?,
                max_entries: max_entries(req.max_entries),
                dry_run: req.dry_run,
            };
            self.streams_control()?
                .discard(&r)
                .await
                .map_err(control_error)
        }
        .await;
        let outcome = match &result {
            Ok(r) => format!(
                "{} {} entries ({:?}); consumers deleted: {:?}",
                if req.dry_run {
                    "would discard"
                } else {
                    "discarded"
                },
                r.entries.len(),
                r.entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
                r.deleted_consumers
            ),
            Err(e) => e.to_string(),
        };
        let audit_id = audited(&caller, ACTION, &req, &outcome);
        let r = result?;
        Ok(Response::new(pb::DiscardPendingResponse {
            audit_id,
            dry_run: req.dry_run,
            entries: r.entries.into_iter().map(entry).collect(),
            deleted_consumers: r.deleted_consumers,
            skipped_consumers: r.skipped,
            truncated: r.truncated,
        }))
    }

    pub(super) async fn handle_run_janitor(
        &self,
        request: Request<pb::RunJanitorRequest>,
    ) -> Result<Response<pb::RunJanitorResponse>, Status> {
        const ACTION: &str = "RunJanitor";
        let caller = authorize(&request, ACTION, Role::Admin)?;
        let req = request.into_inner();
        let result = async {
            common(&req.reason, &req.request_id)?;
            let control = self.streams_control()?;
            let idle = min_idle(
                "consumer_idle",
                req.consumer_idle.as_ref(),
                control.consumer_idle(),
            )?;
            control
                .janitor(idle, req.dry_run)
                .await
                .map_err(control_error)
        }
        .await;
        let outcome = match &result {
            Ok(r) => format!(
                "{} {} entries, {} consumers",
                if req.dry_run { "would trim" } else { "trimmed" },
                r.trims.iter().map(|t| t.entries).sum::<u64>(),
                r.deleted.len()
            ),
            Err(e) => e.to_string(),
        };
        let audit_id = audited(&caller, ACTION, &req, &outcome);
        let report = result?;
        warden_streams::janitor::audit(&report, &caller.name);
        Ok(Response::new(janitor_response(audit_id, report)))
    }
}
