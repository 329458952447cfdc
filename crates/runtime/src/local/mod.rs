//! The local runtime: warden launches the worker processes of configured groups itself,
//! keeps them running, captures their output and restarts, stops or scales them on request.
//! One machine runs a managed fleet with no cluster.
//!
//! Every process has a slot (group, index) with a stable Celery node name; the slot outlives
//! its processes, so a worker keeps its identity (and its log) across restarts.
mod logfile;
mod procfs;
mod settings;
mod supervisor;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use warden_core::{
    model::{Backend, WorkerKey},
    ports::{
        BoxFuture, InstanceInfo, LogEvent, LogFeed, LogPage, LogPosition, PortError, RestartMode,
        Runtime,
    },
};

pub use logfile::{FOLLOW_BUFFER, MAX_LINE};
pub use settings::*;

use self::{
    logfile::{LogLimits, SlotLog},
    supervisor::{Launch, Order, SlotState, Supervisor},
};

/// Why the local runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot use log directory {dir}: {source}")]
    LogDir { dir: String, source: std::io::Error },
}

struct Slot {
    group: String,
    index: u32,
    state: Arc<Mutex<SlotState>>,
    orders: mpsc::Sender<Order>,
    log: Arc<SlotLog>,
}

struct Inner {
    settings: LocalSettings,
    scope: Arc<str>,
    host: String,
    /// Slots by worker key; a group's slots are those with its name.
    slots: RwLock<BTreeMap<WorkerKey, Arc<Slot>>>,
    /// Serialises scale calls (and the slot table's growth).
    scaling: tokio::sync::Mutex<()>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// The local runtime. Cheap to clone.
#[derive(Clone)]
pub struct LocalRuntime {
    inner: Arc<Inner>,
}

impl LocalRuntime {
    /// Launches every configured group. `scope` is the scope of the workers' keys (the Celery
    /// adapter's). Every task it starts is on `tracker` and stops on `cancel` (stopping the
    /// processes: SIGTERM, the stop grace, SIGKILL).
    pub fn start(
        settings: LocalSettings,
        scope: Arc<str>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<LocalRuntime, LocalError> {
        std::fs::create_dir_all(&settings.log_dir).map_err(|source| LocalError::LogDir {
            dir: settings.log_dir.display().to_string(),
            source,
        })?;
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let runtime = LocalRuntime {
            inner: Arc::new(Inner {
                settings,
                scope,
                host,
                slots: RwLock::new(BTreeMap::new()),
                scaling: tokio::sync::Mutex::new(()),
                cancel,
                tracker,
            }),
        };
        for group in runtime.inner.settings.groups.clone() {
            for index in 0..group.count {
                runtime.add_slot(&group, index)?;
            }
        }
        runtime.inner.tracker.spawn(sample(runtime.inner.clone()));
        Ok(runtime)
    }

    /// The node name of slot `index` of `group`.
    pub fn node_name(&self, group: &GroupSpec, index: u32) -> String {
        let template = group.node_name.as_deref().unwrap_or(DEFAULT_NODE_NAME);
        expand(template, &group.name, index, &self.inner.host, "")
    }

    /// Every managed worker, by group and index.
    pub fn workers(&self) -> Vec<(WorkerKey, String, u32)> {
        self.read_slots()
            .iter()
            .map(|(k, s)| (k.clone(), s.group.clone(), s.index))
            .collect()
    }

    fn read_slots(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<WorkerKey, Arc<Slot>>> {
        self.inner.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    fn add_slot(&self, group: &GroupSpec, index: u32) -> Result<(), LocalError> {
        let inner = &self.inner;
        let node = self.node_name(group, index);
        let key = WorkerKey::new(Backend::Celery, inner.scope.clone(), node.as_str());
        let stem = format!("{}-{index}", group.name);
        let limits = LogLimits {
            dir: inner.settings.log_dir.clone(),
            file_bytes: inner.settings.log_file_bytes,
            files: inner.settings.log_files,
        };
        let log = Arc::new(
            SlotLog::open(limits, stem).map_err(|source| LocalError::LogDir {
                dir: inner.settings.log_dir.display().to_string(),
                source,
            })?,
        );
        let x = |t: &str| expand(t, &group.name, index, &inner.host, &node);
        let mut env: Vec<(String, String)> =
            group.env.iter().map(|(k, v)| (k.clone(), x(v))).collect();
        env.push(("WARDEN_GROUP".into(), group.name.clone()));
        env.push(("WARDEN_INDEX".into(), index.to_string()));
        env.push(("WARDEN_NODE".into(), node.clone()));
        let (orders_tx, orders) = mpsc::channel(16);
        let state = Arc::new(Mutex::new(SlotState::default()));
        let supervisor = Supervisor {
            name: format!("{}[{index}]", group.name),
            launch: Launch {
                command: group.command.clone(),
                args: group.args.iter().map(|a| x(a)).collect(),
                env,
                working_dir: group.working_dir.clone(),
            },
            log: log.clone(),
            state: state.clone(),
            orders,
            cancel: inner.cancel.clone(),
            stop_grace: inner.settings.stop_grace,
            backoff_initial: inner.settings.backoff_initial,
            backoff_max: inner.settings.backoff_max,
        };
        inner.tracker.spawn(supervisor.run());
        inner
            .slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                Arc::new(Slot {
                    group: group.name.clone(),
                    index,
                    state,
                    orders: orders_tx,
                    log,
                }),
            );
        Ok(())
    }

    fn slot(&self, worker: &WorkerKey) -> Result<Arc<Slot>, PortError> {
        self.read_slots()
            .get(worker)
            .cloned()
            .ok_or_else(|| PortError::NotFound(format!("no local process for {}", worker.id)))
    }

    async fn order(
        &self,
        slot: &Slot,
        make: impl FnOnce(oneshot::Sender<Result<(), PortError>>) -> Order,
    ) -> Result<(), PortError> {
        let (done, rx) = oneshot::channel();
        slot.orders
            .send(make(done))
            .await
            .map_err(|_| PortError::Failed("the process slot is gone".into()))?;
        rx.await
            .map_err(|_| PortError::Failed("the process slot ended".into()))?
    }

    async fn do_restart(
        &self,
        worker: &WorkerKey,
        mode: RestartMode,
        grace: Duration,
    ) -> Result<(), PortError> {
        let slot = self.slot(worker)?;
        match mode {
            RestartMode::Instance => {
                self.order(&slot, |done| Order::Restart { grace, done })
                    .await
            }
            RestartMode::Rollout => {
                let group: Vec<Arc<Slot>> = self
                    .read_slots()
                    .values()
                    .filter(|s| s.group == slot.group)
                    .cloned()
                    .collect();
                for s in group {
                    self.order(&s, |done| Order::Restart { grace, done })
                        .await?;
                }
                Ok(())
            }
        }
    }

    async fn do_scale(&self, group: &str, replicas: u32) -> Result<(), PortError> {
        let spec = self
            .inner
            .settings
            .groups
            .iter()
            .find(|g| g.name == group)
            .cloned()
            .ok_or_else(|| PortError::NotFound(format!("no local group {group:?}")))?;
        if replicas > 1000 {
            return Err(PortError::Failed("at most 1000 replicas".into()));
        }
        let _serial = self.inner.scaling.lock().await;
        let current: Vec<(WorkerKey, u32)> = self
            .read_slots()
            .iter()
            .filter(|(_, s)| s.group == group)
            .map(|(k, s)| (k.clone(), s.index))
            .collect();
        let count = current.len() as u32;
        for index in count..replicas {
            self.add_slot(&spec, index)
                .map_err(|e| PortError::Failed(e.to_string()))?;
        }
        for (key, index) in current {
            if index >= replicas {
                let slot = self.slot(&key)?;
                let grace = self.inner.settings.stop_grace;
                self.order(&slot, |done| Order::Remove { grace, done })
                    .await?;
                self.inner
                    .slots
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
        }
        Ok(())
    }

    fn info(&self, slot: &Slot) -> InstanceInfo {
        let s = slot.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        InstanceInfo {
            group: slot.group.clone(),
            source: s.last_pid.map(logfile::source).unwrap_or_default(),
            running: s.running,
            held_stopped: s.held_stopped,
            pid: s.pid,
            started_at: s.started_at,
            restarts: s.restarts,
            last_exit: s.last_exit,
            cpu_percent: s.cpu_percent,
            rss_bytes: s.rss_bytes,
        }
    }
}

/// Follows one slot's broadcast.
struct Follower(broadcast::Receiver<LogEvent>);

impl LogFeed for Follower {
    fn next(&mut self) -> BoxFuture<'_, Option<LogEvent>> {
        Box::pin(async move {
            match self.0.recv().await {
                Ok(event) => Some(event),
                Err(broadcast::error::RecvError::Lagged(n)) => Some(LogEvent::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }

    fn try_next(&mut self) -> Option<LogEvent> {
        match self.0.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(LogEvent::Lagged(n)),
            Err(_) => None,
        }
    }
}

impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    /// The configured `stop_grace` (what a stop of a launched process gives it too).
    fn default_grace(&self) -> Duration {
        self.inner.settings.stop_grace
    }

    fn manages<'a>(&'a self, worker: &'a WorkerKey) -> BoxFuture<'a, Result<bool, PortError>> {
        Box::pin(async move { Ok(self.read_slots().contains_key(worker)) })
    }

    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<WorkerKey>, PortError>> {
        Box::pin(async move {
            Ok(self
                .read_slots()
                .keys()
                .filter(|k| &*k.id == id)
                .cloned()
                .collect())
        })
    }

    fn restart<'a>(
        &'a self,
        worker: &'a WorkerKey,
        mode: RestartMode,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(self.do_restart(worker, mode, grace))
    }

    fn stop<'a>(
        &'a self,
        worker: &'a WorkerKey,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let slot = self.slot(worker)?;
            self.order(&slot, |done| Order::Stop { grace, done }).await
        })
    }

    fn start<'a>(&'a self, worker: &'a WorkerKey) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let slot = self.slot(worker)?;
            self.order(&slot, |done| Order::Start { done }).await
        })
    }

    fn scale<'a>(&'a self, group: &'a str, replicas: u32) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(self.do_scale(group, replicas))
    }

    fn instance<'a>(
        &'a self,
        worker: &'a WorkerKey,
    ) -> BoxFuture<'a, Result<InstanceInfo, PortError>> {
        Box::pin(async move { Ok(self.info(&*self.slot(worker)?)) })
    }

    fn read_log<'a>(
        &'a self,
        worker: &'a WorkerKey,
        after: Option<LogPosition>,
        max_lines: usize,
    ) -> BoxFuture<'a, Result<LogPage, PortError>> {
        Box::pin(async move {
            let slot = self.slot(worker)?;
            tokio::task::spawn_blocking(move || slot.log.read(after, max_lines))
                .await
                .map_err(|e| PortError::Failed(e.to_string()))?
                .map_err(|e| PortError::Failed(format!("cannot read the log: {e}")))
        })
    }

    fn follow_log<'a>(
        &'a self,
        worker: &'a WorkerKey,
    ) -> BoxFuture<'a, Result<Box<dyn LogFeed>, PortError>> {
        Box::pin(async move {
            let slot = self.slot(worker)?;
            Ok(Box::new(Follower(slot.log.subscribe())) as Box<dyn LogFeed>)
        })
    }
}

/// Reads CPU time and memory of every running slot's process tree from /proc, each
/// sample interval, until shutdown.
async fn sample(inner: Arc<Inner>) {
    let ticks_per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
    let page = rustix::param::page_size() as u64;
    let mut every = tokio::time::interval(inner.settings.sample_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let Ok(all) = tokio::task::spawn_blocking(procfs::read_all).await else {
            continue;
        };
        let now = Instant::now();
        let slots: Vec<Arc<Slot>> = inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for slot in slots {
            let mut s = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            let Some(pid) = s.pid else { continue };
            let Some((ticks, pages)) = procfs::tree_usage(&all, pid) else {
                continue;
            };
            s.rss_bytes = Some(pages * page);
            if let Some((before, at)) = s.last_ticks {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    let cpu = ticks.saturating_sub(before) as f64 / ticks_per_second;
                    s.cpu_percent = Some(100.0 * cpu / wall);
                }
            }
            s.last_ticks = Some((ticks, now));
        }
    }
}

#[cfg(test)]
mod tests;
