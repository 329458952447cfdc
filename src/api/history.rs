//! `warden.v1.History`: time series over subjects, the metric catalog, events, and a fleet
//! summary over a range. Handlers validate, ask the history store (through its port), and
//! convert; steps are grouped in the store, the aggregation rules live in the core.
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{
    ApiError, convert,
    paging::{self, Cursor},
    worker_health::resolve_error,
};
use crate::{
    fleet::{
        FleetHandle, WorkerKey,
        history::{
            self, Aggregation, AttrValue, Bucket, EventKind, EventQuery, HistoryStore, MetricDef,
            SeriesQuery, Severity, Source, Subject, SubjectKind,
        },
        ports::PortError,
    },
    proto::v1::{self as pb, history_server::History},
};

const MAX_SUBJECTS: usize = 50;
const MAX_METRICS: usize = 20;
const DEFAULT_MAX_POINTS: u32 = 200;
const MAX_POINTS: u32 = 5000;
/// Series × points in one response (about 4 MiB).
const MAX_TOTAL_POINTS: u32 = 100_000;
const DEFAULT_RANGE: Duration = Duration::from_secs(86_400);
/// Steps the server picks from when the request leaves the step to it.
const NICE_STEPS: &[u64] = &[
    10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 604_800,
];

#[derive(Clone)]
pub struct HistoryService {
    fleet: FleetHandle,
    /// None when history is off (`database_url = none`).
    store: Option<Arc<dyn HistoryStore>>,
}

impl HistoryService {
    pub fn new(fleet: FleetHandle, store: Option<Arc<dyn HistoryStore>>) -> Self {
        Self { fleet, store }
    }

    fn store(&self) -> Result<&Arc<dyn HistoryStore>, ApiError> {
        self.store.as_ref().ok_or(ApiError::FailedPrecondition {
            reason: "HISTORY_OFF",
            subject: "database_url".into(),
            message: "history is off on this warden (database_url = none)".into(),
        })
    }

    fn freshness(&self) -> pb::Freshness {
        let snapshot = self.fleet.snapshot();
        let store = snapshot.sources.get(crate::fleet::recorder::STORE);
        pb::Freshness {
            stale: store.is_some_and(|s| !s.connected),
            reason: store
                .filter(|s| !s.connected)
                .map(|s| format!("store: {}", s.reason))
                .unwrap_or_default(),
            updated_at: store.and_then(|s| s.last_ok).map(convert::timestamp),
            sources: store
                .map(|s| pb::SourceStatus {
                    source: s.source.to_string(),
                    available: s.connected,
                    reason: s.reason.clone(),
                    last_ok: s.last_ok.map(convert::timestamp),
                })
                .into_iter()
                .collect(),
        }
    }
}

fn store_error(err: PortError) -> ApiError {
    match err {
        PortError::Unavailable { dependency, reason } => {
            ApiError::Unavailable { dependency, reason }
        }
        other => ApiError::Unavailable {
            dependency: "store",
            reason: other.to_string(),
        },
    }
}

fn time(field: &str, t: Option<&prost_types::Timestamp>) -> Result<Option<SystemTime>, ApiError> {
    t.map(|t| {
        SystemTime::try_from(*t).map_err(|_| ApiError::invalid(field, "not a valid timestamp"))
    })
    .transpose()
}

/// A request's `[start, end)`: `end` defaults to now, `start` to 24 hours before `end`;
/// returns the range's length too. INVALID_ARGUMENT naming `end` unless it is after `start`.
fn time_range(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
    now: SystemTime,
) -> Result<(SystemTime, SystemTime, Duration), ApiError> {
    let end = time("end", end)?.unwrap_or(now);
    let start = time("start", start)?.unwrap_or_else(|| {
        end.checked_sub(DEFAULT_RANGE)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    let range = end
        .duration_since(start)
        .ok()
        .filter(|r| !r.is_zero())
        .ok_or_else(|| ApiError::invalid("end", "must be after start"))?;
    Ok((start, end, range))
}

fn aggregation(a: pb::Aggregation) -> Option<Aggregation> {
    Some(match a {
        pb::Aggregation::Unspecified => return None,
        pb::Aggregation::Avg => Aggregation::Avg,
        pb::Aggregation::Min => Aggregation::Min,
        pb::Aggregation::Max => Aggregation::Max,
        pb::Aggregation::Sum => Aggregation::Sum,
        pb::Aggregation::Last => Aggregation::Last,
        pb::Aggregation::Count => Aggregation::Count,
        pb::Aggregation::P50 => Aggregation::P50,
        pb::Aggregation::P90 => Aggregation::P90,
        pb::Aggregation::P95 => Aggregation::P95,
        pb::Aggregation::P99 => Aggregation::P99,
    })
}

fn aggregation_pb(a: Aggregation) -> pb::Aggregation {
    match a {
        Aggregation::Avg => pb::Aggregation::Avg,
        Aggregation::Min => pb::Aggregation::Min,
        Aggregation::Max => pb::Aggregation::Max,
        Aggregation::Sum => pb::Aggregation::Sum,
        Aggregation::Last => pb::Aggregation::Last,
        Aggregation::Count => pb::Aggregation::Count,
        Aggregation::P50 => pb::Aggregation::P50,
        Aggregation::P90 => pb::Aggregation::P90,
        Aggregation::P95 => pb::Aggregation::P95,
        Aggregation::P99 => pb::Aggregation::P99,
    }
}

fn subject_kind_pb(k: SubjectKind) -> pb::SubjectKind {
    match k {
        SubjectKind::Worker => pb::SubjectKind::Worker,
        SubjectKind::Group => pb::SubjectKind::Group,
        SubjectKind::Queue => pb::SubjectKind::Queue,
        SubjectKind::Fleet => pb::SubjectKind::Fleet,
    }
}

impl HistoryService {
    /// A request's subject in domain terms. Workers are resource names, or short ids that
    /// name one worker of the live fleet.
    fn subject(&self, field: &str, s: &pb::Subject) -> Result<Subject, ApiError> {
        use pb::subject::Kind;
        match &s.kind {
            None => Err(ApiError::invalid(
                field,
                "set one of worker, group, queue, fleet",
            )),
            Some(Kind::Worker(name)) if name.is_empty() => {
                Err(ApiError::invalid(format!("{field}.worker"), "empty"))
            }
            Some(Kind::Worker(name)) => match WorkerKey::parse(name) {
                Some(key) => Ok(Subject::Worker(key)),
                None => self
                    .fleet
                    .snapshot()
                    .resolve(name)
                    .map(|w| Subject::Worker(w.key.clone()))
                    .map_err(|e| resolve_error(&format!("{field}.worker"), e)),
            },
            Some(Kind::Group(g)) => Ok(Subject::Group(convert::group_id(
                &format!("{field}.group"),
                g,
            )?)),
            Some(Kind::Queue(q)) if q.is_empty() => {
                Err(ApiError::invalid(format!("{field}.queue"), "empty"))
            }
            Some(Kind::Queue(q)) => Ok(Subject::Queue(q.clone())),
            Some(Kind::Stream(_)) => Err(ApiError::FailedPrecondition {
                reason: "NOT_SUPPORTED",
                subject: format!("{field}.stream"),
                message: "stream subjects arrive with the Redis Streams backend".into(),
            }),
            Some(Kind::Fleet(_)) => Ok(Subject::Fleet),
        }
    }
}

fn subject_pb(s: &Subject) -> pb::Subject {
    use pb::subject::Kind;
    pb::Subject {
        kind: Some(match s {
            Subject::Worker(key) => Kind::Worker(key.resource_name()),
            Subject::Group(g) => Kind::Group(g.clone()),
            Subject::Queue(q) => Kind::Queue(q.clone()),
            Subject::Fleet => Kind::Fleet(true),
        }),
    }
}

/// The step: the requested one widened to give at most `max_points`, or the smallest nice
/// step that does.
fn step(requested: Option<Duration>, range: Duration, max_points: u32) -> Duration {
    let needed = range
        .as_secs()
        .div_ceil(u64::from(max_points.max(1)))
        .max(1);
    match requested {
        Some(step) => Duration::from_secs(step.as_secs().max(needed).max(1)),
        None => Duration::from_secs(
            NICE_STEPS
                .iter()
                .copied()
                .find(|s| *s >= needed)
                .unwrap_or(needed),
        ),
    }
}

fn summary(metric: &MetricDef, buckets: &[Bucket]) -> Option<pb::SeriesSummary> {
    let all = merged(buckets);
    let source = metric.source;
    // Rates and ratios average from summed parts; distributions from the merged one.
    let avg = all.value(source, Aggregation::Avg)?;
    Some(pb::SeriesSummary {
        avg,
        min: all.value(source, Aggregation::Min).unwrap_or(avg),
        max: all.value(source, Aggregation::Max).unwrap_or(avg),
        last: all.value(source, Aggregation::Last).unwrap_or(avg),
        count: match source {
            Source::Distribution(_) => all.distribution.as_ref().map_or(0, |d| d.count()),
            _ => all.count,
        },
    })
}

#[tonic::async_trait]
impl History for HistoryService {
    async fn query_history(
        &self,
        request: Request<pb::QueryHistoryRequest>,
    ) -> Result<Response<pb::QueryHistoryResponse>, Status> {
        let req = request.into_inner();
        let store = self.store()?;
        if req.subjects.is_empty() || req.subjects.len() > MAX_SUBJECTS {
            return Err(
                ApiError::invalid("subjects", format!("1 to {MAX_SUBJECTS} subjects")).into(),
            );
        }
        if req.metrics.is_empty() || req.metrics.len() > MAX_METRICS {
            return Err(ApiError::invalid("metrics", format!("1 to {MAX_METRICS} metrics")).into());
        }
        let mut subjects = Vec::new();
        for (i, s) in req.subjects.iter().enumerate() {
            let subject = self.subject(&format!("subjects[{i}]"), s)?;
            if !subjects.contains(&subject) {
                subjects.push(subject);
            }
        }
        let mut metrics: Vec<&'static MetricDef> = Vec::new();
        for name in &req.metrics {
            let metric = history::metric(name).ok_or_else(|| {
                ApiError::invalid(
                    "metrics",
                    format!("unknown metric {name:?} (ListMetrics has the catalog)"),
                )
            })?;
            if !subjects.iter().any(|s| metric.subjects.contains(&s.kind())) {
                return Err(ApiError::invalid(
                    "metrics",
                    format!("{name} applies to none of the subjects"),
                )
                .into());
            }
            if !metrics.iter().any(|m| m.name == metric.name) {
                metrics.push(metric);
            }
        }
        let requested_aggregation = pb::Aggregation::try_from(req.aggregation).map_err(|_| {
            ApiError::invalid("aggregation", format!("unknown value {}", req.aggregation))
        })?;
        let requested_aggregation = aggregation(requested_aggregation);
        if let Some(a) = requested_aggregation
            && let Some(m) = metrics.iter().find(|m| !m.aggregations.contains(&a))
        {
            return Err(ApiError::invalid(
                "aggregation",
                format!("{} does not support {a:?}", m.name),
            )
            .into());
        }
        let now = self.fleet.clock().now();
        let (start, end, range) = time_range(req.start.as_ref(), req.end.as_ref(), now)?;
        let requested_step = match req.step {
            None => None,
            Some(d) if d.seconds < 0 || d.nanos < 0 => {
                return Err(ApiError::invalid("step", "must not be negative").into());
            }
            Some(d) => Some(Duration::new(d.seconds as u64, d.nanos as u32)),
        };
        let pairs: Vec<(&Subject, &'static MetricDef)> = subjects
            .iter()
            .flat_map(|s| {
                metrics
                    .iter()
                    .filter(|m| m.subjects.contains(&s.kind()))
                    .map(move |m| (s, *m))
            })
            .collect();
        let max_points = match req.max_points {
            0 => DEFAULT_MAX_POINTS,
            n => n.min(MAX_POINTS),
        }
        .min(MAX_TOTAL_POINTS / pairs.len().max(1) as u32)
        .max(1);
        let step = step(requested_step, range, max_points);

        let mut series = Vec::with_capacity(pairs.len());
        for (subject, metric) in pairs {
            let query = SeriesQuery {
                subject: subject.clone(),
                metric,
                start,
                end,
                step,
            };
            let buckets = store.buckets(&query).await.map_err(store_error)?;
            let aggregation = requested_aggregation.unwrap_or(metric.default_aggregation);
            let points = buckets
                .iter()
                .filter_map(|b| {
                    b.value(metric.source, aggregation).map(|value| pb::Point {
                        time: Some(convert::timestamp(b.start)),
                        value,
                    })
                })
                .collect();
            series.push(pb::Series {
                subject: Some(subject_pb(subject)),
                metric: metric.name.to_string(),
                unit: metric.unit.to_string(),
                source: "celery".into(),
                aggregation: aggregation_pb(aggregation).into(),
                points,
                summary: summary(metric, &buckets),
            });
        }
        let oldest = store.oldest().await.map_err(store_error)?;
        Ok(Response::new(pb::QueryHistoryResponse {
            series,
            step: Some(convert::duration(step)),
            oldest_available: oldest.map(convert::timestamp),
            freshness: Some(self.freshness()),
        }))
    }

    async fn list_metrics(
        &self,
        request: Request<pb::ListMetricsRequest>,
    ) -> Result<Response<pb::ListMetricsResponse>, Status> {
        let req = request.into_inner();
        let kind = pb::SubjectKind::try_from(req.subject_kind).map_err(|_| {
            ApiError::invalid(
                "subject_kind",
                format!("unknown value {}", req.subject_kind),
            )
        })?;
        let metrics = history::CATALOG
            .iter()
            .filter(|m| {
                kind == pb::SubjectKind::Unspecified
                    || m.subjects.iter().any(|s| subject_kind_pb(*s) == kind)
            })
            .map(|m| pb::MetricDescriptor {
                name: m.name.to_string(),
                unit: m.unit.to_string(),
                description: m.description.to_string(),
                aggregations: m
                    .aggregations
                    .iter()
                    .map(|a| aggregation_pb(*a).into())
                    .collect(),
                default_aggregation: aggregation_pb(m.default_aggregation).into(),
                subjects: m
                    .subjects
                    .iter()
                    .map(|s| subject_kind_pb(*s).into())
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListMetricsResponse { metrics }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = request.into_inner();
        let store = self.store()?;
        let page_size = paging::page_size(req.page_size);
        let mut query = EventQuery {
            limit: page_size + 1,
            ..EventQuery::default()
        };
        match req
            .subject
            .as_ref()
            .map(|s| self.subject("subject", s))
            .transpose()?
        {
            None | Some(Subject::Fleet) => {}
            Some(Subject::Worker(key)) => query.worker = Some(key),
            Some(Subject::Group(g)) => query.group = Some(g),
            Some(Subject::Queue(_)) => {
                return Err(
                    ApiError::invalid("subject", "events concern workers and groups").into(),
                );
            }
        }
        for (i, k) in req.kinds.iter().enumerate() {
            let kind = match pb::EventKind::try_from(*k) {
                Ok(pb::EventKind::Lifecycle) => EventKind::Lifecycle,
                Ok(pb::EventKind::Scaling) => EventKind::Scaling,
                Ok(pb::EventKind::Alert) => EventKind::Alert,
                Ok(pb::EventKind::Control) => EventKind::Control,
                Ok(pb::EventKind::Health) => EventKind::Health,
                Ok(pb::EventKind::Recovery) => EventKind::Recovery,
                _ => {
                    return Err(ApiError::invalid(
                        format!("kinds[{i}]"),
                        format!("unknown value {k}"),
                    )
                    .into());
                }
            };
            query.kinds.push(kind);
        }
        query.min_severity = match pb::Severity::try_from(req.min_severity) {
            Ok(pb::Severity::Unspecified) => None,
            Ok(pb::Severity::Info) => Some(Severity::Info),
            Ok(pb::Severity::Warning) => Some(Severity::Warning),
            Ok(pb::Severity::Critical) => Some(Severity::Critical),
            Err(_) => {
                return Err(ApiError::invalid(
                    "min_severity",
                    format!("unknown value {}", req.min_severity),
                )
                .into());
            }
        };
        query.since = time("since", req.since.as_ref())?;
        query.until = time("until", req.until.as_ref())?;
        let mut filter = req.clone();
        filter.page_size = 0;
        filter.page_token.clear();
        let fingerprint = paging::fingerprint(&[&filter.encode_to_vec()]);
        query.before_id = paging::decode(&req.page_token, fingerprint)?.map(|c| c.rank);
        let mut events = store.events(&query).await.map_err(store_error)?;
        let more = events.len() > page_size;
        events.truncate(page_size);
        let next_page_token = match events.last() {
            Some(last) if more => paging::encode(
                fingerprint,
                Cursor {
                    rank: last.id,
                    name: String::new(),
                },
            ),
            _ => String::new(),
        };
        let oldest = store.oldest().await.map_err(store_error)?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(event_pb).collect(),
            next_page_token,
            oldest_available: oldest.map(convert::timestamp),
        }))
    }

    async fn get_fleet_history_summary(
        &self,
        request: Request<pb::GetFleetHistorySummaryRequest>,
    ) -> Result<Response<pb::GetFleetHistorySummaryResponse>, Status> {
        let req = request.into_inner();
        let store = self.store()?;
        let now = self.fleet.clock().now();
        let (start, end, range) = time_range(req.start.as_ref(), req.end.as_ref(), now)?;
        let groups: Vec<String> = req
            .groups
            .iter()
            .map(|g| convert::group_id("groups", g))
            .collect::<Result<_, _>>()?;
        let mut subjects = vec![(None, Subject::Fleet)];
        subjects.extend(
            groups
                .iter()
                .map(|g| (Some(g.clone()), Subject::Group(g.clone()))),
        );
        let mut out = pb::FleetHistorySummary {
            start: Some(convert::timestamp(start)),
            end: Some(convert::timestamp(end)),
            ..Default::default()
        };
        for (group, subject) in subjects {
            let totals = range_totals(store.as_ref(), &subject, start, end, range).await?;
            match group {
                None => out.totals = Some(totals),
                Some(group) => out.groups.push(pb::GroupRangeTotals {
                    group,
                    totals: Some(totals),
                }),
            }
        }
        // Crashes, clean stops, scaling, restarts and alerts, from the events of the range.
        let counted = event_totals(store.as_ref(), start, end).await?;
        // Distinct workers seen during the range: those known to have been heard from in it.
        let known = store.known_workers().await.map_err(store_error)?;
        if let Some(totals) = out.totals.as_mut() {
            totals.lost = counted.lost;
            totals.clean_stops = counted.clean_stops;
            totals.scale_ups = counted.scale_ups;
            totals.scale_downs = counted.scale_downs;
            totals.restarts = counted.restarts;
            totals.automatic_restarts = counted.automatic_restarts;
            totals.alerts_fired = Some(pb::SeverityCounts {
                info: counted.alerts_fired[0],
                warning: counted.alerts_fired[1],
                critical: counted.alerts_fired[2],
            });
            totals.workers_seen = known
                .iter()
                .filter(|w| w.first_seen < end && w.last_seen >= start)
                .count() as u32;
        }
        let oldest = store.oldest().await.map_err(store_error)?;
        Ok(Response::new(pb::GetFleetHistorySummaryResponse {
            summary: Some(out),
            oldest_available: oldest.map(convert::timestamp),
            freshness: Some(self.freshness()),
        }))
    }
}

/// Most events a fleet summary reads (pages of [`EVENT_PAGE`]); beyond it the counts cover
/// the newest events of the range only, and a warning is logged.
const EVENT_SUMMARY_CAP: usize = 1_000_000;
const EVENT_PAGE: usize = 10_000;

/// The event figures of a range, paging through its events newest first.
async fn event_totals(
    store: &dyn HistoryStore,
    start: SystemTime,
    end: SystemTime,
) -> Result<history::EventTotals, ApiError> {
    let mut totals = history::EventTotals::default();
    let mut before_id = None;
    let mut read = 0usize;
    loop {
        let page = store
            .events(&EventQuery {
                kinds: vec![
                    EventKind::Lifecycle,
                    EventKind::Scaling,
                    EventKind::Control,
                    EventKind::Recovery,
                    EventKind::Alert,
                ],
                since: Some(start),
                until: Some(end),
                before_id,
                limit: EVENT_PAGE,
                ..EventQuery::default()
            })
            .await
            .map_err(store_error)?;
        read += page.len();
        for stored in &page {
            totals.add(&stored.event);
        }
        if page.len() < EVENT_PAGE {
            return Ok(totals);
        }
        if read >= EVENT_SUMMARY_CAP {
            tracing::warn!(read, "fleet summary: event count capped");
            return Ok(totals);
        }
        before_id = page.last().map(|e| e.id);
    }
}

/// Every bucket of a series folded into one (a summary over the whole range).
fn merged(buckets: &[Bucket]) -> Bucket {
    let mut all = Bucket::default();
    for b in buckets {
        all.merge(b);
    }
    all
}

/// Totals of a subject over a range: each figure is one step as wide as the range.
async fn range_totals(
    store: &dyn HistoryStore,
    subject: &Subject,
    start: SystemTime,
    end: SystemTime,
    range: Duration,
) -> Result<pb::RangeTotals, ApiError> {
    let query = |name: &str| -> Result<SeriesQuery, ApiError> {
        Ok(SeriesQuery {
            subject: subject.clone(),
            metric: history::metric(name)
                .ok_or_else(|| ApiError::invalid("metric", "not in the catalog"))?,
            start,
            end,
            step: range + Duration::from_secs(1),
        })
    };
    // Each figure is one step as wide as the range, read and folded into one bucket.
    let whole = |name: &'static str| async move {
        let buckets = store.buckets(&query(name)?).await.map_err(store_error)?;
        Ok::<_, ApiError>(merged(&buckets))
    };
    let succeeded = whole("succeeded").await?;
    let failed = whole("failed").await?;
    let throughput = whole("throughput").await?;
    let alive = whole("alive_workers").await?;
    let runtime = whole("runtime").await?;
    let finished = succeeded.sum + failed.sum;
    let secs = |d: Option<Duration>| d.map(convert::duration);
    Ok(pb::RangeTotals {
        tasks_finished: finished as u64,
        tasks_failed: failed.sum as u64,
        error_rate: if finished > 0.0 {
            failed.sum / finished
        } else {
            0.0
        },
        // Alive workers at each tick, times the sampled minutes per tick.
        worker_hours_alive: if alive.count > 0 && throughput.count > 0 {
            alive.sum * (throughput.denominator / throughput.count as f64) / 60.0
        } else {
            0.0
        },
        // The peak of workers alive at once; the fleet's total is replaced by the distinct
        // workers seen (from the known workers) by the caller.
        workers_seen: alive.max as u32,
        runtime: runtime.distribution.as_ref().map(|d| pb::Distribution {
            count: d.count(),
            mean: secs(d.mean()),
            min: secs(d.min()),
            max: secs(d.max()),
            p50: secs(d.quantile(0.5)),
            p90: secs(d.quantile(0.9)),
            p95: secs(d.quantile(0.95)),
            p99: secs(d.quantile(0.99)),
        }),
        peak_throughput_per_min: throughput.max,
        // The event figures are the fleet's, filled in by the caller.
        ..Default::default()
    })
}

fn event_pb(stored: history::StoredEvent) -> pb::Event {
    let e = stored.event;
    let kind = match e.kind {
        EventKind::Lifecycle => pb::EventKind::Lifecycle,
        EventKind::Scaling => pb::EventKind::Scaling,
        EventKind::Alert => pb::EventKind::Alert,
        EventKind::Control => pb::EventKind::Control,
        EventKind::Health => pb::EventKind::Health,
        EventKind::Recovery => pb::EventKind::Recovery,
    };
    let severity = match e.severity {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    };
    pb::Event {
        id: stored.id.to_string(),
        time: Some(convert::timestamp(e.at)),
        kind: kind.into(),
        severity: severity.into(),
        worker: e.worker.map(|k| k.resource_name()).unwrap_or_default(),
        group: e
            .group
            .map(|g| convert::group_name(crate::fleet::Backend::Celery, &g))
            .unwrap_or_default(),
        message: e.message,
        attributes: e
            .attributes
            .into_iter()
            .map(|(k, v)| {
                use pb::attribute_value::Value;
                let value = match v {
                    AttrValue::String(s) => Value::StringValue(s),
                    AttrValue::Int(i) => Value::IntValue(i),
                    AttrValue::Double(d) => Value::DoubleValue(d),
                    AttrValue::Bool(b) => Value::BoolValue(b),
                    AttrValue::Time(t) => Value::TimestampValue(convert::timestamp(t)),
                    AttrValue::Duration(d) => Value::DurationValue(convert::duration(d)),
                };
                (k, pb::AttributeValue { value: Some(value) })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_widened_to_the_point_budget_and_nice_when_chosen() {
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(step(None, week, 200), Duration::from_secs(3600));
        assert_eq!(step(None, week, 168), Duration::from_secs(3600));
        assert_eq!(
            step(Some(Duration::from_secs(3600)), week, 200),
            Duration::from_secs(3600)
        );
        // 1 s over a week would be 604,800 points: widened to the budget.
        assert_eq!(
            step(Some(Duration::from_secs(1)), week, 5000),
            Duration::from_secs(121)
        );
    }
}
