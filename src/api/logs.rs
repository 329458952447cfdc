//! `warden.v1.Logs`: log tails of workers, read from the runtime that runs them.
//!
//! A Tail reads the worker's stored log forward (in pages, so memory stays bounded by the
//! requested line count), keeps the last `tail_lines` lines that pass the filters, sends them,
//! and then, when following, sends new lines from the runtime's feed. The feed is subscribed
//! before the read-back, and followed lines at or before the last position read are skipped:
//! nothing is lost between the two or sent twice. A client that reads too slowly falls behind
//! the feed's bounded buffer; the lines it lost are reported in a LINES_DROPPED event.
use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use warden_core::{
    FleetHandle, ResolveError, WorkerKey,
    ports::{LogEvent, LogPosition, RawLogLine, Runtime},
};

use super::{ApiError, convert, error::shutting_down, paging, worker_health::resolve_error};
use crate::{
    logline::{self, Classifier, Filter, Level},
    proto::v1::{self as pb, logs_server::Logs},
};

/// `tail_lines` when unset.
pub const DEFAULT_TAIL_LINES: u32 = 100;
/// The most `tail_lines` honoured (larger values are lowered), per the contract.
pub const MAX_TAIL_LINES: u32 = 5_000;
/// Most lines and bytes per message, per the contract.
const MAX_BATCH_LINES: usize = 1000;
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Lines read from the runtime per page.
const PAGE_LINES: usize = 2000;
/// A quiet follow stream gets a heartbeat this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
const MAX_TEXT_FIELD: usize = 1024;
const MAX_TASK_ID: usize = 255;
const MAX_CONTAINER: usize = 253;

#[derive(Clone)]
pub struct LogsService {
    fleet: FleetHandle,
    runtime: Option<Arc<dyn Runtime>>,
    cancel: CancellationToken,
}

impl LogsService {
    pub fn new(
        fleet: FleetHandle,
        runtime: Option<Arc<dyn Runtime>>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            fleet,
            runtime,
            cancel,
        }
    }

    /// The worker a request names: one the fleet knows, or one the runtime manages that has
    /// not reported yet.
    async fn resolve(&self, runtime: &dyn Runtime, name: &str) -> Result<WorkerKey, ApiError> {
        match self.fleet.snapshot().resolve(name) {
            Ok(worker) => Ok(worker.key.clone()),
            Err(ResolveError::NotFound(_)) => {
                let mut found = runtime.find(name).await.map_err(ApiError::from)?;
                match found.len() {
                    1 => Ok(found.remove(0)),
                    0 => Err(ApiError::worker_not_found(name)),
                    _ => Err(ApiError::Ambiguous {
                        field: "worker".into(),
                        name: name.into(),
                        candidates: found.iter().map(|k| k.resource_name()).collect(),
                    }),
                }
            }
            Err(e) => Err(resolve_error("worker", e)),
        }
    }
}

type TailStream = Pin<Box<dyn Stream<Item = Result<pb::TailResponse, Status>> + Send>>;

/// A resume point: the worker it was issued for (hashed) and the position after the last
/// line examined.
fn encode_cursor(worker: u64, at: LogPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("1.{worker:x}.{}.{}", at.segment, at.offset))
}

fn decode_cursor(cursor: &str, worker: u64) -> Result<LogPosition, ApiError> {
    let bad = || ApiError::invalid("cursor", "not a cursor this server issued");
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let parts: Vec<&str> = text.split('.').collect();
    let [version, hash, segment, offset] = parts[..] else {
        return Err(bad());
    };
    if version != "1" {
        return Err(bad());
    }
    if u64::from_str_radix(hash, 16).map_err(|_| bad())? != worker {
        return Err(ApiError::invalid(
            "cursor",
            "issued for another worker or container",
        ));
    }
    Ok(LogPosition {
        segment: segment.parse().map_err(|_| bad())?,
        offset: offset.parse().map_err(|_| bad())?,
    })
}

fn level_of(value: i32, field: &str) -> Result<Option<Level>, ApiError> {
    if value == 0 {
        return Ok(None);
    }
    Level::from_number(value)
        .map(Some)
        .ok_or_else(|| ApiError::invalid(field, format!("{value} is not a LogLevel")))
}

/// The request's filters, validated; each error names its field.
fn filter(req: &pb::TailRequest) -> Result<Filter, ApiError> {
    if req.levels.len() > 7 {
        return Err(ApiError::invalid("levels", "at most 7 values"));
    }
    let levels = req
        .levels
        .iter()
        .map(|l| level_of(*l, "levels"))
        .collect::<Result<_, _>>()?;
    let min_level = level_of(req.min_level, "min_level")?;
    for (field, value, max) in [
        ("contains", &req.contains, MAX_TEXT_FIELD),
        ("regex", &req.regex, MAX_TEXT_FIELD),
        ("task_id", &req.task_id, MAX_TASK_ID),
        ("container", &req.container, MAX_CONTAINER),
    ] {
        if value.len() > max {
            return Err(ApiError::invalid(field, format!("at most {max} bytes")));
        }
    }
    let regex = if req.regex.is_empty() {
        None
    } else {
        Some(logline::compile_regex(&req.regex).map_err(|e| ApiError::invalid("regex", e))?)
    };
    let since = match &req.since {
        None => None,
        Some(ts) if ts.seconds < 0 || !(0..1_000_000_000).contains(&ts.nanos) => {
            return Err(ApiError::invalid("since", "not a valid timestamp"));
        }
        Some(ts) => {
            Some(SystemTime::UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos as u32))
        }
    };
    Ok(Filter {
        levels,
        min_level,
        contains: req.contains.clone(),
        regex,
        task_id: req.task_id.clone(),
        since,
    })
}

/// Turns raw lines into LogLines, keeping the per-source continuation state.
struct Lines {
    worker: String,
    filter: Filter,
    classifier: Classifier,
}

impl Lines {
    fn convert(&mut self, raw: RawLogLine) -> Option<pb::LogLine> {
        let line = self.classifier.classify(&raw.source, &raw.text);
        if !self.filter.matches(raw.time, &raw.text, &line) {
            return None;
        }
        Some(pb::LogLine {
            time: Some(convert::timestamp(raw.time)),
            level: line.level.map_or(0, |l| l as i32),
            text: raw.text,
            worker: self.worker.clone(),
            source: raw.source,
            truncated: raw.truncated,
            fields: line.parsed.fields.into_iter().collect(),
            task_id: line.parsed.task_id.unwrap_or_default(),
        })
    }
}

fn event(
    kind: pb::StreamEventKind,
    source: &str,
    dropped: u64,
    message: String,
) -> pb::StreamEvent {
    pb::StreamEvent {
        kind: kind as i32,
        source: source.to_string(),
        dropped,
        message,
        time: Some(convert::timestamp(SystemTime::now())),
    }
}

fn event_response(cursor: String, e: pb::StreamEvent) -> pb::TailResponse {
    pb::TailResponse {
        cursor,
        payload: Some(pb::tail_response::Payload::Event(e)),
    }
}

/// Splits lines into messages of at most 1000 lines and 1 MiB.
fn batches(lines: Vec<pb::LogLine>) -> Vec<Vec<pb::LogLine>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for line in lines {
        let size = line.text.len() + 64;
        if !current.is_empty()
            && (current.len() >= MAX_BATCH_LINES || bytes + size > MAX_BATCH_BYTES)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn lines_response(cursor: String, lines: Vec<pb::LogLine>) -> pb::TailResponse {
    pb::TailResponse {
        cursor,
        payload: Some(pb::tail_response::Payload::Lines(pb::LogBatch { lines })),
    }
}

#[tonic::async_trait]
impl Logs for LogsService {
    type TailStream = TailStream;

    async fn tail(
        &self,
        request: Request<pb::TailRequest>,
    ) -> Result<Response<TailStream>, Status> {
        let req = request.into_inner();
        if req.worker.is_empty() {
            return Err(ApiError::invalid("worker", "required").into());
        }
        if req.worker.len() > MAX_TEXT_FIELD {
            return Err(ApiError::invalid("worker", "at most 1024 bytes").into());
        }
        let filter = filter(&req)?;
        let Some(runtime) = self.runtime.clone() else {
            return Err(ApiError::FailedPrecondition {
                reason: "NO_RUNTIME",
                subject: req.worker.clone(),
                message: "no runtime is configured: warden has no Kubernetes connection and \
                          launches no local workers"
                    .into(),
            }
            .into());
        };
        if !req.container.is_empty() && runtime.name() == "local" {
            return Err(ApiError::invalid(
                "container",
                "must be empty: the local runtime has no containers",
            )
            .into());
        }
        let key = self.resolve(runtime.as_ref(), &req.worker).await?;
        if !runtime.manages(&key).await.map_err(ApiError::from)? {
            return Err(ApiError::FailedPrecondition {
                reason: "NOT_MANAGED",
                subject: key.resource_name(),
                message: format!(
                    "{} is not managed by the {} runtime",
                    key.resource_name(),
                    runtime.name()
                ),
            }
            .into());
        }
        let worker_hash = paging::fingerprint(&[key.resource_name().as_bytes()]);
        let resume = if req.cursor.is_empty() {
            None
        } else {
            Some(decode_cursor(&req.cursor, worker_hash)?)
        };
        let tail_lines = req
            .tail_lines
            .unwrap_or(DEFAULT_TAIL_LINES)
            .min(MAX_TAIL_LINES) as usize;
        // Subscribe before reading back (see the module's doc).
        let mut feed = if req.follow {
            Some(runtime.follow_log(&key).await.map_err(ApiError::from)?)
        } else {
            None
        };
        let instance = runtime.instance(&key).await.map_err(ApiError::from)?;
        let mut lines = Lines {
            worker: key.resource_name(),
            filter,
            classifier: Classifier::default(),
        };
        let cancel = self.cancel.clone();
        let stream = async_stream::stream! {
            let cursor = |at: LogPosition| encode_cursor(worker_hash, at);
            // The read-back.
            let mut at = resume;
            let mut kept: VecDeque<pb::LogLine> = VecDeque::new();
            let mut first = true;
            loop {
                let page = match runtime.read_log(&key, at, PAGE_LINES).await {
                    Ok(page) => page,
                    Err(e) => {
                        yield Err(Status::from(ApiError::from(e)));
                        return;
                    }
                };
                if first && page.gap && resume.is_some() {
                    yield Ok(event_response(cursor(page.next), event(
                        pb::StreamEventKind::LinesDropped, &instance.source, 0,
                        "the lines after the cursor were rotated away".into(),
                    )));
                }
                first = false;
                let done = page.lines.is_empty();
                at = Some(page.next);
                for raw in page.lines {
                    if let Some(line) = lines.convert(raw) {
                        if resume.is_some() {
                            kept.push_back(line);
                        } else if tail_lines > 0 {
                            if kept.len() == tail_lines {
                                kept.pop_front();
                            }
                            kept.push_back(line);
                        }
                    }
                }
                // Resuming sends as it reads; a tail keeps only its last lines.
                if resume.is_some() && !kept.is_empty() {
                    let here = cursor(at.unwrap_or_default());
                    for batch in batches(kept.drain(..).collect()) {
                        yield Ok(lines_response(here.clone(), batch));
                    }
                }
                if done {
                    break;
                }
            }
            let mut last = at.unwrap_or_default();
            for batch in batches(kept.into_iter().collect()) {
                yield Ok(lines_response(cursor(last), batch));
            }
            let Some(feed) = feed.as_mut() else { return };
            // Following.
            if !instance.running {
                yield Ok(event_response(cursor(last), event(
                    pb::StreamEventKind::WaitingForInstance, "", 0,
                    "the worker has no running process".into(),
                )));
            }
            let mut heartbeat = tokio::time::interval_at(
                tokio::time::Instant::now() + HEARTBEAT_EVERY,
                HEARTBEAT_EVERY,
            );
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => {
                        yield Err(shutting_down());
                        return;
                    }
                    _ = heartbeat.tick() => {
                        yield Ok(event_response(cursor(last), event(
                            pb::StreamEventKind::Heartbeat, "", 0, String::new(),
                        )));
                        continue;
                    }
                    next = feed.next() => next,
                };
                heartbeat.reset();
                // Lines already buffered go out together (at most one message's worth); the
                // first other event ends the batch and is handled after it.
                let mut next = next;
                if let Some(LogEvent::Line(_)) = &next {
                    let mut batch = Vec::new();
                    let mut bytes = 0;
                    while let Some(LogEvent::Line(raw)) = next {
                        if raw.position > last {
                            last = raw.position;
                            if let Some(line) = lines.convert(raw) {
                                bytes += line.text.len() + 64;
                                batch.push(line);
                            }
                        }
                        next = if batch.len() < MAX_BATCH_LINES && bytes < MAX_BATCH_BYTES {
                            feed.try_next()
                        } else {
                            None
                        };
                    }
                    if !batch.is_empty() {
                        yield Ok(lines_response(cursor(last), batch));
                    }
                    if next.is_none() {
                        continue;
                    }
                }
                match next {
                    None => {
                        yield Ok(event_response(cursor(last), event(
                            pb::StreamEventKind::WaitingForInstance, "", 0,
                            "the worker's process slot was removed".into(),
                        )));
                        return;
                    }
                    Some(LogEvent::Line(raw)) => {
                        if raw.position <= last {
                            continue; // already read back
                        }
                        last = raw.position;
                        if let Some(line) = lines.convert(raw) {
                            yield Ok(lines_response(cursor(last), vec![line]));
                        }
                    }
                    Some(LogEvent::Started { source }) => {
                        yield Ok(event_response(cursor(last), event(
                            pb::StreamEventKind::InstanceChanged, &source, 0,
                            format!("new process {source}"),
                        )));
                    }
                    Some(LogEvent::Exited { source, status }) => {
                        yield Ok(event_response(cursor(last), event(
                            pb::StreamEventKind::WaitingForInstance, &source, 0,
                            format!("process {source} ended ({status:?})"),
                        )));
                    }
                    Some(LogEvent::Lagged(n)) => {
                        yield Ok(event_response(cursor(last), event(
                            pb::StreamEventKind::LinesDropped, "", n,
                            format!("{n} lines dropped: the client read too slowly"),
                        )));
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_worker() {
        let at = LogPosition {
            segment: 3,
            offset: 4096,
        };
        let c = encode_cursor(42, at);
        assert_eq!(decode_cursor(&c, 42).unwrap(), at);
        assert!(decode_cursor(&c, 43).is_err());
        assert!(decode_cursor("garbage!", 42).is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("2.2a.1.1"), 42).is_err());
    }

    #[test]
    fn request_fields_are_validated_by_name() {
        let field = |req: pb::TailRequest| match filter(&req).unwrap_err() {
            ApiError::InvalidArgument { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(pb::TailRequest {
                levels: vec![9],
                ..Default::default()
            }),
            "levels"
        );
        assert_eq!(
            field(pb::TailRequest {
                min_level: -1,
                ..Default::default()
            }),
            "min_level"
        );
        assert_eq!(
            field(pb::TailRequest {
                regex: "(".into(),
                ..Default::default()
            }),
            "regex"
        );
        assert_eq!(
            field(pb::TailRequest {
                contains: "x".repeat(1025),
                ..Default::default()
            }),
            "contains"
        );
        assert_eq!(
            field(pb::TailRequest {
                task_id: "x".repeat(256),
                ..Default::default()
            }),
            "task_id"
        );
    }

    #[test]
    fn batches_respect_the_line_and_byte_limits() {
        let line = |n: usize| pb::LogLine {
            text: "x".repeat(n),
            ..Default::default()
        };
        assert_eq!(batches((0..2500).map(|_| line(1)).collect()).len(), 3);
        assert_eq!(batches((0..3).map(|_| line(600_000)).collect()).len(), 3);
        assert!(batches(Vec::new()).is_empty());
    }
}
