//! `warden.v1.WorkerHealth`: reads of the live fleet.
use std::{collections::HashSet, pin::Pin, sync::Arc, time::Duration};

use prost::Message as _;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::warn;

use super::{
    ApiError,
    convert::{self, Detail},
    paging::{self, Cursor},
};
use crate::{
    fleet::{self, ChangeKind, FleetHandle, Refresher, Snapshot, Thresholds},
    proto::v1::{self as pb, worker_health_server::WorkerHealth},
};

/// The service and what it reads from.
#[derive(Clone)]
pub struct WorkerHealthService {
    fleet: FleetHandle,
    refresher: Option<Arc<dyn Refresher>>,
    thresholds: Thresholds,
    /// Upper bound of an on-demand refresh (inspect timeout plus broker round-trips).
    refresh_budget: Duration,
    /// Ends every WatchFleet stream at shutdown.
    shutdown: CancellationToken,
}

impl WorkerHealthService {
    pub fn new(
        fleet: FleetHandle,
        refresher: Option<Arc<dyn Refresher>>,
        thresholds: Thresholds,
        refresh_budget: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            fleet,
            refresher,
            thresholds,
            refresh_budget,
            shutdown,
        }
    }

    /// Runs a fresh inspect if asked; a failure is reported in `freshness`, not as an error,
    /// because the last known state is still worth answering with.
    ///
    /// The RPC waits at most `refresh_budget`. The round itself runs in a task of its own, so
    /// that when the broker stalls mid-round the caller is answered on time while the round
    /// still finishes, within its own broker timeouts, and removes its reply binding.
    async fn maybe_refresh(&self, refresh: bool, names: Option<Vec<String>>) -> Option<String> {
        if !refresh {
            return None;
        }
        let refresher = self.refresher.clone()?;
        let round = tokio::spawn(async move { refresher.refresh(names).await });
        match tokio::time::timeout(self.refresh_budget, round).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(err))) => Some(err),
            Ok(Err(join)) => Some(format!("refresh task failed: {join}")),
            Err(_) => Some(format!("no answer within {:?}", self.refresh_budget)),
        }
    }
}

/// Sort rank of a worker for an order (ties broken by name).
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
        let page_size = paging::page_size(req.page_size)?;
        let order = pb::WorkerOrder::try_from(req.order_by).map_err(|_| {
            ApiError::invalid("order_by", format!("unknown value {}", req.order_by))
        })?;
        let filter = convert::worker_filter(req.filter.as_ref(), "filter")?;
        let filter_bytes = req.filter.clone().unwrap_or_default().encode_to_vec();
        let fingerprint = paging::fingerprint(&[&filter_bytes, &req.order_by.to_be_bytes()]);
        let after = paging::decode(&req.page_token, fingerprint)?;

        let refresh_error = self.maybe_refresh(req.refresh, None).await;
        let snapshot = self.fleet.snapshot();
        let now = self.fleet.clock().now();
        let matches = |w: &&Arc<fleet::Worker>| filter.matches(w, now, self.thresholds);
        // Sorted by (rank, name), borrowed: nothing is cloned but the page sent.
        let mut matching: Vec<(i64, &Arc<fleet::Worker>)> = snapshot
            .workers
            .values()
            .filter(matches)
            .map(|w| (rank(order, w), w))
            .collect();
        // The map is ordered by name already; only other orders need a sort (stable, so ties
        // stay by name).
        if !matches!(order, pb::WorkerOrder::Unspecified | pb::WorkerOrder::Name) {
            matching.sort_by_key(|(rank, _)| *rank);
        }
        let total_size = matching.len() as u32;
        let start = after.map_or(0, |after| {
            matching.partition_point(|(rank, w)| {
                (*rank, w.name.as_str()) <= (after.rank, after.name.as_str())
            })
        });
        let page = &matching[start.min(matching.len())..(start + page_size).min(matching.len())];
        let next_page_token = match page.last() {
            Some((rank, w)) if start + page.len() < matching.len() => paging::encode(
                fingerprint,
                Cursor {
                    rank: *rank,
                    name: w.name.clone(),
                },
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListWorkersResponse {
            workers: page
                .iter()
                .map(|(_, w)| {
                    convert::worker(w, now, self.thresholds, &snapshot.broker, Detail::Summary)
                })
                .collect(),
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
        let known = self.fleet.snapshot().workers.contains_key(&req.name);
        // Only address a worker we know: a refresh must not invent one from a typo.
        let refresh_error = self
            .maybe_refresh(req.refresh && known, Some(vec![req.name.clone()]))
            .await;
        let snapshot = self.fleet.snapshot();
        let worker = snapshot
            .workers
            .get(&req.name)
            .ok_or_else(|| ApiError::NotFound(format!("no worker named {:?}", req.name)))?;
        let now = self.fleet.clock().now();
        Ok(Response::new(pb::GetWorkerResponse {
            worker: Some(convert::worker(
                worker,
                now,
                self.thresholds,
                &snapshot.broker,
                Detail::Full,
            )),
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
        let now = self.fleet.clock().now();
        let mut s = pb::FleetSummary::default();
        for w in snapshot
            .workers
            .values()
            .filter(|w| filter.matches(w, now, self.thresholds))
        {
            s.workers += 1;
            match w.activity {
                fleet::Activity::Active => s.active += 1,
                fleet::Activity::Idle => s.idle += 1,
                fleet::Activity::Unresponsive => s.unresponsive += 1,
            }
            match w.lifecycle {
                fleet::Lifecycle::Alive => {
                    s.alive += 1;
                    s.pool_capacity += w.pool.as_ref().map_or(0, |p| u64::from(p.max_concurrency));
                }
                fleet::Lifecycle::Offline => s.offline += 1,
                fleet::Lifecycle::Lost => s.lost += 1,
            }
            match fleet::filter::health(w, now, self.thresholds).status {
                fleet::HealthStatus::Healthy => s.healthy += 1,
                fleet::HealthStatus::Warning => s.warning += 1,
                fleet::HealthStatus::Critical => s.critical += 1,
            }
            s.active_tasks += u64::from(w.active_tasks);
            s.processed_tasks += w.processed_total;
            s.throughput_per_min += w
                .task_stats
                .as_ref()
                .and_then(|t| t.overall.first())
                .map_or(0.0, |one_minute| one_minute.throughput_per_min());
        }
        for q in snapshot.queues.values() {
            s.queued_messages += q.depth;
            s.unacked_messages += q.unacked;
        }
        Ok(Response::new(pb::GetFleetSummaryResponse {
            summary: Some(s),
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
        let (mut changes, snapshot) = self.fleet.subscribe();
        let service = self.clone();
        let stream = async_stream::try_stream! {
            let mut watcher = Watcher { service, filter, include_queues: req.include_queues, sent: HashSet::new(), revision: 0 };
            let resumed = (req.resume_from_revision > 0)
                .then(|| snapshot.changes_since(req.resume_from_revision))
                .flatten();
            match resumed {
                Some(replay) => {
                    watcher.revision = req.resume_from_revision;
                    // The client already holds the state as of its revision: rebuild which
                    // workers it has from the snapshot minus the replayed changes.
                    watcher.sent = watcher.names_matching(&snapshot);
                    for change in replay.iter().rev() {
                        match &change.kind {
                            ChangeKind::WorkerAdded(w) => { watcher.sent.remove(&w.name); }
                            ChangeKind::WorkerRemoved { name, .. } => { watcher.sent.insert(name.clone()); }
                            ChangeKind::WorkerUpdated(_) | ChangeKind::QueueUpdated(_) => {}
                        }
                    }
                    for change in replay {
                        if let Some(message) = watcher.change(&change, &snapshot) {
                            yield message;
                        }
                    }
                }
                None => {
                    let reason = if req.resume_from_revision > 0 {
                        pb::SnapshotReason::ResumeUnavailable
                    } else {
                        pb::SnapshotReason::Initial
                    };
                    yield watcher.snapshot(&snapshot, reason);
                }
            }
            let shutdown = watcher.service.shutdown.clone();
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    received = changes.recv() => received,
                };
                match received {
                    Ok(change) => {
                        if change.revision <= watcher.revision {
                            continue;
                        }
                        let latest = watcher.service.fleet.snapshot();
                        if let Some(message) = watcher.change(&change, &latest) {
                            yield message;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "WatchFleet client fell behind; resynchronising with a snapshot");
                        let latest = watcher.service.fleet.snapshot();
                        yield watcher.snapshot(&latest, pb::SnapshotReason::Resync);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_worker_history(
        &self,
        _request: Request<pb::GetWorkerHistoryRequest>,
    ) -> Result<Response<pb::GetWorkerHistoryResponse>, Status> {
        Err(ApiError::Unimplemented("GetWorkerHistory arrives with the history store").into())
    }

    async fn list_events(
        &self,
        _request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        Err(ApiError::Unimplemented("ListEvents arrives with the history store").into())
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let req = request.into_inner();
        let page_size = paging::page_size(req.page_size)?;
        let glob = convert::glob("name_glob", &req.name_glob)?;
        let fingerprint = paging::fingerprint(&[req.name_glob.as_bytes()]);
        let after = paging::decode(&req.page_token, fingerprint)?;
        let snapshot = self.fleet.snapshot();
        let matching: Vec<_> = snapshot
            .queues
            .values()
            .filter(|q| glob.as_ref().is_none_or(|g| g.is_match(&q.name)))
            .filter(|q| after.as_ref().is_none_or(|a| q.name > a.name))
            .collect();
        let page: Vec<_> = matching.iter().take(page_size).collect();
        let next_page_token = if matching.len() > page.len() {
            page.last()
                .map(|q| {
                    paging::encode(
                        fingerprint,
                        Cursor {
                            rank: 0,
                            name: q.name.clone(),
                        },
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListQueuesResponse {
            queues: page.iter().map(|q| convert::queue(q)).collect(),
            next_page_token,
            freshness: Some(convert::freshness(&snapshot, None)),
        }))
    }

    async fn list_alerts(
        &self,
        _request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        Err(ApiError::Unimplemented("ListAlerts arrives with the alerting engine").into())
    }
}

/// The per-stream state of one WatchFleet client: which workers it currently holds.
struct Watcher {
    service: WorkerHealthService,
    filter: fleet::WorkerFilter,
    include_queues: bool,
    sent: HashSet<String>,
    revision: u64,
}

impl Watcher {
    fn names_matching(&self, snapshot: &Snapshot) -> HashSet<String> {
        let now = self.service.fleet.clock().now();
        snapshot
            .workers
            .values()
            .filter(|w| self.filter.matches(w, now, self.service.thresholds))
            .map(|w| w.name.clone())
            .collect()
    }

    fn snapshot(
        &mut self,
        snapshot: &Snapshot,
        reason: pb::SnapshotReason,
    ) -> pb::WatchFleetResponse {
        let now = self.service.fleet.clock().now();
        self.sent = self.names_matching(snapshot);
        self.revision = snapshot.revision;
        pb::WatchFleetResponse {
            revision: snapshot.revision,
            time: Some(convert::timestamp(snapshot.at)),
            event: Some(pb::watch_fleet_response::Event::Snapshot(
                pb::FleetSnapshot {
                    workers: snapshot
                        .workers
                        .values()
                        .filter(|w| self.sent.contains(&w.name))
                        .map(|w| {
                            convert::worker(
                                w,
                                now,
                                self.service.thresholds,
                                &snapshot.broker,
                                Detail::Summary,
                            )
                        })
                        .collect(),
                    queues: if self.include_queues {
                        snapshot
                            .queues
                            .values()
                            .map(|q| convert::queue(q))
                            .collect()
                    } else {
                        Vec::new()
                    },
                    reason: reason.into(),
                },
            )),
        }
    }

    /// The message for one change as this client sees it through its filter, if any.
    fn change(
        &mut self,
        change: &fleet::FleetChange,
        latest: &Snapshot,
    ) -> Option<pb::WatchFleetResponse> {
        use pb::watch_fleet_response::Event;
        self.revision = change.revision;
        let now = self.service.fleet.clock().now();
        let event = match &change.kind {
            ChangeKind::WorkerAdded(w) | ChangeKind::WorkerUpdated(w) => {
                let matches = self.filter.matches(w, now, self.service.thresholds);
                let had = self.sent.contains(&w.name);
                let message = || {
                    convert::worker(
                        w,
                        now,
                        self.service.thresholds,
                        &latest.broker,
                        Detail::Summary,
                    )
                };
                match (had, matches) {
                    (false, true) => {
                        self.sent.insert(w.name.clone());
                        Event::WorkerAdded(message())
                    }
                    (true, true) => Event::WorkerUpdated(message()),
                    (true, false) => {
                        self.sent.remove(&w.name);
                        Event::WorkerRemoved(pb::WorkerRemoved {
                            name: w.name.clone(),
                            backend: convert::backend(w.backend).into(),
                        })
                    }
                    (false, false) => return None,
                }
            }
            ChangeKind::QueueUpdated(queue) => {
                if !self.include_queues {
                    return None;
                }
                Event::QueueUpdated(convert::queue(queue))
            }
            ChangeKind::WorkerRemoved { name, backend } => {
                if !self.sent.remove(name) {
                    return None;
                }
                Event::WorkerRemoved(pb::WorkerRemoved {
                    name: name.clone(),
                    backend: convert::backend(*backend).into(),
                })
            }
        };
        Some(pb::WatchFleetResponse {
            revision: change.revision,
            time: Some(convert::timestamp(change.at)),
            event: Some(event),
        })
    }
}
