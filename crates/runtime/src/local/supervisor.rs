//! One process slot: keeps a process running (respawning one that dies, with backoff), and
//! carries out stop, start, restart and removal. The slot's state is what the runtime reports.
use std::{
    os::unix::process::ExitStatusExt,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tokio::{
    process::{Child, Command},
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;
use warden_core::ports::{ExitRecord, ExitStatus, LogEvent, PortError};

use super::{
    logfile::{self, SlotLog, Stream},
    settings::BACKOFF_RESET_AFTER,
};

/// What a slot reports (see `InstanceInfo`).
#[derive(Debug, Clone, Default)]
pub struct SlotState {
    pub pid: Option<u32>,
    pub last_pid: Option<u32>,
    pub running: bool,
    pub held_stopped: bool,
    pub started_at: Option<SystemTime>,
    pub restarts: u32,
    pub last_exit: Option<ExitRecord>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// Last /proc reading: (cpu ticks, when).
    pub last_ticks: Option<(u64, Instant)>,
}

type Ack = oneshot::Sender<Result<(), PortError>>;

/// Orders for a slot's supervisor.
pub enum Order {
    /// Stop (if running) and start again.
    Restart { grace: Duration, done: Ack },
    /// Stop and stay stopped.
    Stop { grace: Duration, done: Ack },
    /// Start if stopped.
    Start { done: Ack },
    /// Stop and end the supervisor.
    Remove { grace: Duration, done: Ack },
}

/// How to launch the slot's process.
pub struct Launch {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<std::path::PathBuf>,
}

pub struct Supervisor {
    pub name: String,
    pub launch: Launch,
    pub log: Arc<SlotLog>,
    pub state: Arc<Mutex<SlotState>>,
    pub orders: mpsc::Receiver<Order>,
    pub cancel: CancellationToken,
    pub stop_grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// What ended a running process's watch.
enum Ended {
    /// It died on its own.
    Died,
    /// An order stopped it; `then` says what to do next.
    Ordered(Next),
    /// warden is shutting down.
    Shutdown,
}

enum Next {
    Respawn(Option<Ack>),
    Hold(Option<Ack>),
    Remove(Option<Ack>),
}

impl Supervisor {
    fn update(&self, f: impl FnOnce(&mut SlotState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub async fn run(mut self) {
        let mut backoff = self.backoff_initial;
        let mut pending: Option<Ack> = None;
        let mut first = true;
        loop {
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(err) => {
                    tracing::warn!(slot = %self.name, %err, "cannot launch worker process");
                    if let Some(done) = pending.take() {
                        let _ = done.send(Err(PortError::Failed(format!(
                            "cannot launch {}: {err}",
                            self.name
                        ))));
                    }
                    match self.wait_backoff(&mut backoff).await {
                        Some(next) => {
                            if !self.follow_next(next, &mut pending).await {
                                return;
                            }
                            continue;
                        }
                        None => continue,
                    }
                }
            };
            let pid = child.id().unwrap_or(0);
            self.update(|s| {
                s.pid = Some(pid);
                s.last_pid = Some(pid);
                s.running = true;
                s.held_stopped = false;
                s.started_at = Some(SystemTime::now());
                s.cpu_percent = None;
                s.rss_bytes = None;
                s.last_ticks = None;
                if !first {
                    s.restarts += 1;
                }
            });
            first = false;
            self.log.announce(LogEvent::Started {
                source: logfile::source(pid),
            });
            self.pump(&mut child, pid);
            if let Some(done) = pending.take() {
                let _ = done.send(Ok(()));
            }
            let began = Instant::now();
            let ended = self.watch(&mut child, pid).await;
            if began.elapsed() >= BACKOFF_RESET_AFTER {
                backoff = self.backoff_initial;
            }
            match ended {
                Ended::Shutdown => return,
                Ended::Ordered(next) => {
                    if !self.follow_next(next, &mut pending).await {
                        return;
                    }
                }
                Ended::Died => {
                    if let Some(next) = self.wait_backoff(&mut backoff).await
                        && !self.follow_next(next, &mut pending).await
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Acts on what an order asked for once the process is down; false ends the supervisor.
    async fn follow_next(&mut self, next: Next, pending: &mut Option<Ack>) -> bool {
        match next {
            Next::Respawn(done) => {
                *pending = done;
                true
            }
            Next::Remove(done) => {
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
                false
            }
            Next::Hold(done) => {
                self.update(|s| s.held_stopped = true);
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
                // Stopped: only an order (or shutdown) moves it.
                loop {
                    let order = tokio::select! {
                        _ = self.cancel.cancelled() => return false,
                        order = self.orders.recv() => order,
                    };
                    match order {
                        None => return false,
                        Some(Order::Start { done }) | Some(Order::Restart { done, .. }) => {
                            *pending = Some(done);
                            return true;
                        }
                        Some(Order::Stop { done, .. }) => {
                            let _ = done.send(Ok(()));
                        }
                        Some(Order::Remove { done, .. }) => {
                            let _ = done.send(Ok(()));
                            return false;
                        }
                    }
                }
            }
        }
    }

    /// Waits before a respawn; orders received meanwhile take effect (`Some`), else `None`.
    async fn wait_backoff(&mut self, backoff: &mut Duration) -> Option<Next> {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(self.backoff_max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            _ = self.cancel.cancelled() => Some(Next::Remove(None)),
            order = self.orders.recv() => Some(match order {
                None => Next::Remove(None),
                Some(Order::Restart { done, .. }) | Some(Order::Start { done }) => {
                    Next::Respawn(Some(done))
                }
                Some(Order::Stop { done, .. }) => Next::Hold(Some(done)),
                Some(Order::Remove { done, .. }) => Next::Remove(Some(done)),
            }),
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.launch.command);
        cmd.args(&self.launch.args)
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group: a forced stop kills the pool children too.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.launch.working_dir {
            cmd.current_dir(dir);
        }
        cmd.spawn()
    }

    fn pump(&self, child: &mut Child, pid: u32) {
        if let Some(out) = child.stdout.take() {
            let log = self.log.clone();
            tokio::spawn(async move {
                log.pump(tokio::io::BufReader::new(out), Stream::Stdout, pid)
                    .await
            });
        }
        if let Some(err) = child.stderr.take() {
            let log = self.log.clone();
            tokio::spawn(async move {
                log.pump(tokio::io::BufReader::new(err), Stream::Stderr, pid)
                    .await
            });
        }
    }

    /// Watches a running process until it dies, an order stops it, or shutdown.
    async fn watch(&mut self, child: &mut Child, pid: u32) -> Ended {
        loop {
            let order = tokio::select! {
                status = child.wait() => {
                    self.exited(pid, status.ok(), false);
                    return Ended::Died;
                }
                _ = self.cancel.cancelled() => {
                    self.terminate(child, pid, self.stop_grace).await;
                    return Ended::Shutdown;
                }
                order = self.orders.recv() => order,
            };
            match order {
                None => {
                    self.terminate(child, pid, self.stop_grace).await;
                    return Ended::Shutdown;
                }
                Some(Order::Start { done }) => {
                    let _ = done.send(Ok(()));
                }
                Some(Order::Restart { grace, done }) => {
                    self.terminate(child, pid, grace).await;
                    return Ended::Ordered(Next::Respawn(Some(done)));
                }
                Some(Order::Stop { grace, done }) => {
                    self.terminate(child, pid, grace).await;
                    return Ended::Ordered(Next::Hold(Some(done)));
                }
                Some(Order::Remove { grace, done }) => {
                    self.terminate(child, pid, grace).await;
                    return Ended::Ordered(Next::Remove(Some(done)));
                }
            }
        }
    }

    /// SIGTERM (Celery's warm shutdown), then after `grace` SIGKILL to the process group.
    async fn terminate(&self, child: &mut Child, pid: u32, grace: Duration) {
        if let Some(p) = Pid::from_raw(pid as i32) {
            let _ = kill_process(p, Signal::TERM);
        }
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                tracing::info!(slot = %self.name, pid, "grace period over; killing");
                kill_group(pid);
                child.wait().await.ok()
            }
        };
        self.exited(pid, status, true);
    }

    fn exited(&self, pid: u32, status: Option<std::process::ExitStatus>, requested: bool) {
        // Whatever is left of the group (orphaned pool children) goes with it.
        kill_group(pid);
        let status = match status {
            Some(s) => match (s.code(), s.signal()) {
                (_, Some(sig)) => ExitStatus::Signal(sig),
                (Some(code), _) => ExitStatus::Code(code),
                _ => ExitStatus::Code(-1),
            },
            None => ExitStatus::Code(-1),
        };
        if !requested {
            tracing::warn!(slot = %self.name, pid, ?status, "worker process died");
        }
        self.update(|s| {
            s.pid = None;
            s.running = false;
            s.cpu_percent = None;
            s.rss_bytes = None;
            s.last_exit = Some(ExitRecord {
                status,
                at: SystemTime::now(),
                requested,
                reason: None,
            });
        });
        self.log.announce(LogEvent::Exited {
            source: logfile::source(pid),
            status,
        });
    }
}

fn kill_group(pid: u32) {
    if let Some(p) = Pid::from_raw(pid as i32) {
        let _ = kill_process_group(p, Signal::KILL);
    }
}
