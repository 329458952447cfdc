//! `warden.v1.WorkerHealth`: reads of the live fleet. Handlers validate, ask the core, convert.
use std::{pin::Pin, sync::Arc, time::Duration};

use prost::Message as _;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    ApiError,
    convert::{self, View},
    error::shutting_down,
    paging::{self, Cursor},
    watch_token,
};
use crate::{
    fleet::{
        self, FleetHandle, Refresher, ResolveError, Snapshot, WatchEvent, WatchItem, WatchOptions,
    },
    proto::v1::{self as pb, watch_fleet_response::Event, worker_health_server::WorkerHealth},
};

/// Largest encoded snapshot chunk of a WatchFleet stream: well under gRPC's default 4 MiB
/// message limit, so that any default-configured client (grpcurl included) can read it.
pub const CHUNK_BYTES: usize = 1 << 20;
/// A ListWorkers page in the FULL view stops growing at this encoded size.
const PAGE_BYTES: usize = 3 << 20;
/// Bounds of a requested bookmark interval.
const BOOKMARK_MIN: Duration = Duration::from_secs(1);
const BOOKMARK_MAX: Duration = Duration::from_secs(300);

/// The service and what it reads from.
/// How long GetWorker waits for the runtime's view of the instance.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct WorkerHealthService {
    fleet: FleetHandle,
    refresher: Option<Arc<dyn Refresher>>,
    /// Upper bound of an on-demand refresh (inspect timeout plus broker round-trips).
    refresh_budget: Duration,
    /// Default time between bookmarks on a quiet watch.
    bookmark_every: Duration,
    /// Owns refresh rounds, so that shutdown waits for them.
    tasks: tokio_util::task::TaskTracker,
    /// Where workers run, when a runtime is configured: GetWorker asks it for the instance.
    runtime: Option<Arc<dyn fleet::ports::Runtime>>,
}

impl WorkerHealthService {
    pub fn new(
        fleet: FleetHandle,
        refresher: Option<Arc<dyn Refresher>>,
        refresh_budget: Duration,
        bookmark_every: Duration,
        tasks: tokio_util::task::TaskTracker,
    ) -> Self {
        Self {
            fleet,
            refresher,
            refresh_budget,
            bookmark_every,
            tasks,
            runtime: None,
        }
    }

    /// GetWorker adds what `runtime` knows of the worker's instance.
    pub fn with_runtime(mut self, runtime: Option<Arc<dyn fleet::ports::Runtime>>) -> Self {
        self.runtime = runtime;
        self
    }

    /// Runs a fresh inspect if asked; a failure is reported in `freshness`, not as an error,
    /// because the last known state is still worth answering with.
    ///
    /// The RPC waits at most `refresh_budget`. The round itself runs in a task of its own, so
    /// that when the broker stalls mid-round the caller is answered on time while the round
    /// still finishes, within its own broker timeouts, and removes its reply binding.
    async fn maybe_refresh(&self, refresh: bool, ids: Option<Vec<String>>) -> Option<String> {
        if !refresh {
            return None;
        }
        let refresher = self.refresher.clone()?;
        let round = self
            .tasks
            .spawn(async move { refresher.refresh(ids).await });
        match tokio::time::timeout(self.refresh_budget, round).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(err))) => Some(err),
            Ok(Err(join)) => Some(format!("refresh task failed: {join}")),
            Err(_) => Some(format!("no answer within {:?}", self.refresh_budget)),
        }
    }
}

/// Maps a name that did not resolve to the API's error, naming `field`.
pub fn resolve_error(field: &str, err: ResolveError) -> ApiError {
    match err {
        ResolveError::NotFound(name) => ApiError::worker_not_found(name),
        ResolveError::Ambiguous { name, candidates } => ApiError::Ambiguous {
            field: field.to_string(),
            name,
            candidates: candidates.iter().map(|k| k.resource_name()).collect(),
        },
    }
}

/// Sort rank of a worker for an order (ties broken by key).
fn rank(order: pb::WorkerOrder, w: &fleet::Worker) -> i64 {
    match order {
        pb::WorkerOrder::Unspecified | pb::WorkerOrder::Name => 0,
        pb::WorkerOrder::Activity => match w.activity {
            fleet::Activity::Active => 0,
            fleet::Activity::Idle => 1,
            fleet::Activity::Unresponsive => 2,
        },
        pb::WorkerOrder::ActiveTasks => -i64::from(w.active_tasks),
        pb::WorkerOrder::ProcessedTasks => -(w.processed_total.min(i64::MAX as u64) as i64),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchFleetResponse, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerHealth for WorkerHealthService {
    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let req = request.into_inner();
        let page_size = paging::page_size(req.page_size);
        let order = pb::WorkerOrder::try_from(req.order_by).map_err(|_| {
            ApiError::invalid("order_by", format!("unknown value {}", req.order_by))
        })?;
        let view = convert::view(req.view, View::Basic)?;
        let filter = convert::worker_filter(req.filter.as_ref(), "filter")?;
        let filter_bytes = req.filter.clone().unwrap_or_default().encode_to_vec();
        let fingerprint = paging::fingerprint(&[
            &filter_bytes,
            &req.order_by.to_be_bytes(),
            &req.view.to_be_bytes(),
        ]);
        let after = paging::decode(&req.page_token, fingerprint)?;
        let after = match after {
            Some(cursor) => Some((
                cursor.rank,
                fleet::WorkerKey::parse(&cursor.name).ok_or_else(|| ApiError::BadToken {
                    field: "page_token",
                    reason: "not a token issued by this server".into(),
                })?,
            )),
            None => None,
        };

        let refresh_error = self.maybe_refresh(req.refresh, None).await;
        let snapshot = self.fleet.snapshot();
        let now = self.fleet.clock().now();
        // Sorted by (rank, key), borrowed: nothing is cloned but the page sent.
        let mut matching: Vec<(i64, &Arc<fleet::Worker>)> = snapshot
            .workers
            .values()
            .filter(|w| filter.matches(w))
            .map(|w| (rank(order, w), w))
            .collect();
        // The map is ordered by key already; only other orders need a (stable) sort.
        if !matches!(order, pb::WorkerOrder::Unspecified | pb::WorkerOrder::Name) {
            matching.sort_by_key(|(rank, _)| *rank);
        }
        let total_size = matching.len() as u32;
        let start = after.map_or(0, |(after_rank, after_key)| {
            matching.partition_point(|(rank, w)| (*rank, &w.key) <= (after_rank, &after_key))
        });
        let mut workers = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        for (rank, w) in matching.iter().skip(start).take(page_size) {
            let worker = convert::worker(w, now, &snapshot, view);
            bytes += worker.encoded_len();
            if bytes > PAGE_BYTES && !workers.is_empty() {
                break;
            }
            workers.push(worker);
            last = Some((*rank, *w));
        }
        let next_page_token = match last {
            Some((rank, w)) if start + workers.len() < matching.len() => paging::encode(
                fingerprint,
                Cursor {
                    rank,
                    name: w.key.resource_name(),
                },
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListWorkersResponse {
            workers,
            next_page_token,
            total_size,
            freshness: Some(convert::freshness(&snapshot, refresh_error.as_deref())),
            revision: snapshot.revision,
        }))
    }

    async fn get_worker(
        &self,
        request: Request<pb::GetWorkerRequest>,
    ) -> Result<Response<pb::GetWorkerResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "required").into());
        }
        let view = convert::view(req.view, View::Full)?;
        // Only address a worker we know: a refresh must not invent one from a typo.
        let known = self
            .fleet
            .snapshot()
            .resolve(&req.name)
            .map_err(|e| resolve_error("name", e))?;
        let refresh = req.refresh && known.backend() == fleet::Backend::Celery;
        let refresh_error = self
            .maybe_refresh(refresh, Some(vec![known.id().to_string()]))
            .await;
        let snapshot = self.fleet.snapshot();
        let worker = snapshot
            .workers
            .get(&known.key)
            .ok_or_else(|| ApiError::worker_not_found(known.key.resource_name()))?;
        let now = self.fleet.clock().now();
        let mut out = convert::worker(worker, now, &snapshot, view);
        if let Some(runtime) = &self.runtime {
            // Bounded: a slow runtime costs the caller the instance, not the answer.
            if let Ok(Ok(info)) =
                tokio::time::timeout(RUNTIME_TIMEOUT, runtime.instance(&known.key)).await
            {
                out.instance = Some(convert::instance(runtime.name(), &info));
            }
        }
        Ok(Response::new(pb::GetWorkerResponse {
            worker: Some(out),
            freshness: Some(convert::freshness(&snapshot, refresh_error.as_deref())),
            revision: snapshot.revision,
        }))
    }

    async fn get_fleet_summary(
        &self,
        request: Request<pb::GetFleetSummaryRequest>,
    ) -> Result<Response<pb::GetFleetSummaryResponse>, Status> {
        let req = request.into_inner();
        let filter = convert::worker_filter(req.filter.as_ref(), "filter")?;
        let snapshot = self.fleet.snapshot();
        Ok(Response::new(pb::GetFleetSummaryResponse {
            summary: Some(convert::summary(&snapshot.summary(&filter))),
            freshness: Some(convert::freshness(&snapshot, None)),
            revision: snapshot.revision,
        }))
    }

    type WatchFleetStream = WatchStream;

    async fn watch_fleet(
        &self,
        request: Request<pb::WatchFleetRequest>,
    ) -> Result<Response<Self::WatchFleetStream>, Status> {
        let req = request.into_inner();
        let filter = convert::worker_filter(req.filter.as_ref(), "filter")?;
        let view = convert::view(req.view, View::Basic)?;
        let bookmark_every = match req.bookmark_interval {
            None => self.bookmark_every,
            Some(d) if d.seconds < 0 || d.nanos < 0 => {
                return Err(ApiError::invalid("bookmark_interval", "must not be negative").into());
            }
            Some(d) => {
                Duration::new(d.seconds as u64, d.nanos as u32).clamp(BOOKMARK_MIN, BOOKMARK_MAX)
            }
        };
        let fingerprint = paging::fingerprint(&[
            &req.filter.clone().unwrap_or_default().encode_to_vec(),
            &req.view.to_be_bytes(),
            &[u8::from(req.include_queues)],
        ]);
        let resume = watch_token::decode(&req.resume_token)?.map(|token| {
            if token.fingerprint == fingerprint {
                token.position
            } else {
                // Issued for another filter or view: what the client holds is not what this
                // stream would send, so it gets a snapshot (no revision is ever this high).
                fleet::Position {
                    revision: u64::MAX,
                    ..token.position
                }
            }
        });
        let mut watch = self.fleet.watch(WatchOptions {
            filter,
            resume,
            include_queues: req.include_queues,
            bookmark_every,
        });
        let fleet = self.fleet.clone();
        let stream = async_stream::stream! {
            loop {
                let Some(item) = watch.next().await else {
                    yield Err(shutting_down());
                    break;
                };
                let now = fleet.clock().now();
                for message in messages(item, now, view, fingerprint) {
                    yield Ok(message);
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let req = request.into_inner();
        let page_size = paging::page_size(req.page_size);
        let glob = convert::glob("name_glob", &req.name_glob)?;
        let fingerprint = paging::fingerprint(&[req.name_glob.as_bytes()]);
        let after = paging::decode(&req.page_token, fingerprint)?;
        let snapshot = self.fleet.snapshot();
        let matching: Vec<_> = snapshot
            .queues
            .values()
            .filter(|q| glob.as_ref().is_none_or(|g| g.is_match(&q.name)))
            .filter(|q| {
                after
                    .as_ref()
                    .is_none_or(|a| (q.backend as i64, &q.name) > (a.rank, &a.name))
            })
            .collect();
        let page: Vec<_> = matching.iter().take(page_size).collect();
        let next_page_token = match page.last() {
            Some(q) if matching.len() > page.len() => paging::encode(
                fingerprint,
                Cursor {
                    // Queues are ordered by backend, then name.
                    rank: q.backend as i64,
                    name: q.name.clone(),
                },
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListQueuesResponse {
            queues: page.iter().map(|q| convert::queue(q)).collect(),
            next_page_token,
            freshness: Some(convert::freshness(&snapshot, None)),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let req = request.into_inner();
        let page_size = paging::page_size(req.page_size);
        let backends = convert::enum_values(
            "backends",
            &req.backends,
            |v| pb::Backend::try_from(v).ok(),
            convert::backend_from_pb,
        )?;
        let kinds = convert::enum_values(
            "kinds",
            &req.kinds,
            |v| pb::GroupKind::try_from(v).ok(),
            |k| (k != pb::GroupKind::Unspecified).then_some(k),
        )?;
        let glob = convert::glob("name_glob", &req.name_glob)?;
        let mut fingerprint_parts = req
            .backends
            .iter()
            .map(|b| b.to_be_bytes())
            .collect::<Vec<_>>();
        fingerprint_parts.extend(req.kinds.iter().map(|k| k.to_be_bytes()));
        let mut parts: Vec<&[u8]> = fingerprint_parts.iter().map(|p| p.as_slice()).collect();
        parts.push(req.name_glob.as_bytes());
        let fingerprint = paging::fingerprint(&parts);
        let after = paging::decode(&req.page_token, fingerprint)?;
        let snapshot = self.fleet.snapshot();
        let matching: Vec<pb::Group> = snapshot
            .groups()
            .iter()
            .filter(|g| backends.is_empty() || backends.contains(&g.backend))
            .filter(|g| glob.as_ref().is_none_or(|m| m.is_match(&*g.id)))
            .map(convert::group)
            .filter(|g| kinds.is_empty() || kinds.iter().any(|k| i32::from(*k) == g.kind))
            .collect();
        let total_size = matching.len() as u32;
        let rest: Vec<pb::Group> = matching
            .into_iter()
            .filter(|g| after.as_ref().is_none_or(|a| g.name > a.name))
            .collect();
        let more = rest.len() > page_size;
        let groups: Vec<pb::Group> = rest.into_iter().take(page_size).collect();
        let next_page_token = match groups.last() {
            Some(g) if more => paging::encode(
                fingerprint,
                Cursor {
                    rank: 0,
                    name: g.name.clone(),
                },
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListGroupsResponse {
            groups,
            next_page_token,
            total_size,
            freshness: Some(convert::freshness(&snapshot, None)),
            revision: snapshot.revision,
        }))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "required").into());
        }
        let id = convert::group_id("name", &req.name)?;
        let snapshot = self.fleet.snapshot();
        let found: Vec<pb::Group> = snapshot
            .groups()
            .iter()
            .filter(|g| *g.id == *id)
            .map(convert::group)
            .filter(|g| !req.name.starts_with("groups/") || g.name == req.name)
            .collect();
        let group = match found.len() {
            0 => {
                return Err(ApiError::NotFound {
                    resource_type: "warden.v1.Group",
                    message: format!("no group named {:?}", req.name),
                    name: req.name,
                }
                .into());
            }
            1 => found.into_iter().next(),
            _ => {
                return Err(ApiError::Ambiguous {
                    field: "name".into(),
                    name: req.name,
                    candidates: found.into_iter().map(|g| g.name).collect(),
                }
                .into());
            }
        };
        Ok(Response::new(pb::GetGroupResponse {
            group,
            freshness: Some(convert::freshness(&snapshot, None)),
            revision: snapshot.revision,
        }))
    }
}

/// The messages one watch item becomes: a snapshot is begin, chunks of at most
/// [`CHUNK_BYTES`], end; anything else is one message.
fn messages(
    item: WatchItem,
    now: std::time::SystemTime,
    view: View,
    fingerprint: u64,
) -> Vec<pb::WatchFleetResponse> {
    let token = watch_token::encode(item.position, fingerprint);
    let revision = item.position.revision;
    let time = Some(convert::timestamp(item.at));
    let message = |event: Event, token: String| pb::WatchFleetResponse {
        resume_token: token,
        revision,
        time,
        event: Some(event),
    };
    let snapshot: &Snapshot = &item.snapshot;
    match item.event {
        WatchEvent::Snapshot {
            reason,
            workers,
            queues,
        } => {
            let mut out = vec![message(
                Event::SnapshotBegin(pb::SnapshotBegin {
                    reason: snapshot_reason(reason).into(),
                    total_workers: workers.len() as u32,
                    total_queues: queues.len() as u32,
                }),
                String::new(),
            )];
            let mut chunk = pb::SnapshotChunk::default();
            let mut bytes = 0;
            let mut flush = |chunk: &mut pb::SnapshotChunk, bytes: &mut usize| {
                if !chunk.workers.is_empty() || !chunk.queues.is_empty() {
                    out.push(message(
                        Event::SnapshotChunk(std::mem::take(chunk)),
                        String::new(),
                    ));
                }
                *bytes = 0;
            };
            for w in &workers {
                let worker = convert::worker(w, now, snapshot, view);
                let size = worker.encoded_len() + 8;
                if bytes + size > CHUNK_BYTES {
                    flush(&mut chunk, &mut bytes);
                }
                bytes += size;
                chunk.workers.push(worker);
            }
            for q in &queues {
                let queue = convert::queue(q);
                let size = queue.encoded_len() + 8;
                if bytes + size > CHUNK_BYTES {
                    flush(&mut chunk, &mut bytes);
                }
                bytes += size;
                chunk.queues.push(queue);
            }
            flush(&mut chunk, &mut bytes);
            out.push(message(Event::SnapshotEnd(pb::SnapshotEnd {}), token));
            out
        }
        WatchEvent::WorkerAdded(w) => vec![message(
            Event::WorkerAdded(convert::worker(&w, now, snapshot, view)),
            token,
        )],
        WatchEvent::WorkerUpdated(w) => vec![message(
            Event::WorkerUpdated(convert::worker(&w, now, snapshot, view)),
            token,
        )],
        WatchEvent::WorkerRemoved(key) => vec![message(
            Event::WorkerRemoved(pb::WorkerRemoved {
                name: key.resource_name(),
                id: key.id.to_string(),
                backend: convert::backend(key.backend).into(),
            }),
            token,
        )],
        WatchEvent::QueueUpdated(q) => {
            vec![message(Event::QueueUpdated(convert::queue(&q)), token)]
        }
        WatchEvent::Bookmark => vec![pb::WatchFleetResponse {
            time: Some(convert::timestamp(now)),
            ..message(Event::Bookmark(pb::Bookmark {}), token)
        }],
    }
}

fn snapshot_reason(reason: fleet::SnapshotReason) -> pb::SnapshotReason {
    match reason {
        fleet::SnapshotReason::Initial => pb::SnapshotReason::Initial,
        fleet::SnapshotReason::ResumeUnavailable => pb::SnapshotReason::ResumeUnavailable,
        fleet::SnapshotReason::Resync => pb::SnapshotReason::Resync,
        fleet::SnapshotReason::EpochChanged => pb::SnapshotReason::EpochChanged,
    }
}
