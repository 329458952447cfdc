//! Scaling a group through the runtime (ScaleGroup): a Kubernetes workload's replicas, or a
//! local launch group's process count. An operation that ends when the group has that many
//! ALIVE workers, or NOT_BACK after the back timeout.
use std::time::Instant;

use warden_core::{
    Lifecycle,
    operations::{Operation, OperationHandle, Outcome, TargetProgress},
};

use super::{ControlError, Controller, Origin};

/// The size a ScaleGroup or LaunchWorkers asks for.
#[derive(Debug, Clone, Copy)]
pub enum Resize {
    /// Exactly this many (ScaleGroup).
    To(u32),
    /// This many more than are alive now (LaunchWorkers on an existing launch group).
    More(u32),
}

impl Controller {
    /// Starts resizing `group` (`verb`: "scale" or "launch", as the operation says); returns
    /// the operation as created (ended, and not stored, for a dry run).
    pub async fn resize(
        &self,
        verb: &str,
        group: &str,
        resize: Resize,
        dry_run: bool,
        origin: Origin<'_>,
    ) -> Result<Operation, ControlError> {
        let Some(runtime) = self.runtime.clone() else {
            return Err(ControlError::NoRuntime(
                "scaling a group needs a runtime (Kubernetes or local processes)".into(),
            ));
        };
        let now = self.operations.now();
        let mut op = Operation::new(verb, origin.actor, origin.reason, origin.request_id, now);
        op.audit_id = origin.audit_id.to_string();
        op.revision = origin.revision;
        op.dry_run = dry_run;
        let alive = self.alive_in_group(group).await;
        let replicas = match resize {
            Resize::To(n) => n,
            Resize::More(n) => u32::try_from(alive).unwrap_or(u32::MAX).saturating_add(n),
        };
        op.targets = vec![TargetProgress {
            worker: String::new(),
            code: if dry_run {
                Outcome::WouldApply
            } else {
                Outcome::Pending
            },
            message: if dry_run {
                format!("would scale {group} from {alive} alive to {replicas}")
            } else {
                String::new()
            },
            update_time: now,
            group: group.to_string(),
            instance: String::new(),
        }];
        if dry_run {
            let (state, message) = op.verdict();
            op.state = state;
            op.message = message;
            op.end_time = Some(now);
            return Ok(op);
        }
        let handle = self.operations.create(op);
        let created = handle.snapshot();
        let this = self.clone();
        let group = group.to_string();
        self.tasks.spawn(async move {
            handle.set_running();
            if let Err(err) = runtime.scale(&group, replicas).await {
                handle.target(0, Outcome::Failed, err.to_string());
                handle.finish(Some(err.to_string()));
                return;
            }
            handle.target(
                0,
                Outcome::Running,
                format!("scaled; waiting for {replicas} alive"),
            );
            let (code, message) = this.wait_scaled(&handle, &group, replicas).await;
            handle.target(0, code, message);
            handle.finish(None);
        });
        Ok(created)
    }

    /// Alive workers the runtime places in `group`.
    async fn alive_in_group(&self, group: &str) -> usize {
        let Some(runtime) = &self.runtime else {
            return 0;
        };
        let snapshot = self.fleet.snapshot();
        let mut n = 0;
        for w in snapshot
            .workers
            .values()
            .filter(|w| w.lifecycle == Lifecycle::Alive)
        {
            if runtime
                .instance(&w.key)
                .await
                .is_ok_and(|i| i.group == group && i.running)
            {
                n += 1;
            }
        }
        n
    }

    async fn wait_scaled(
        &self,
        handle: &OperationHandle,
        group: &str,
        replicas: u32,
    ) -> (Outcome, String) {
        let began = Instant::now();
        let deadline = began + self.settings.back_timeout;
        let target = usize::try_from(replicas).unwrap_or(usize::MAX);
        while Instant::now() < deadline && !self.cancel.is_cancelled() {
            if handle.cancelled().is_cancelled() {
                return (Outcome::Cancelled, "cancelled while waiting".into());
            }
            let alive = self.alive_in_group(group).await;
            if alive == target {
                return (
                    Outcome::Applied,
                    format!(
                        "BACK: {alive} alive after {:.1} s",
                        began.elapsed().as_secs_f64()
                    ),
                );
            }
            handle.target(0, Outcome::Running, format!("{alive} of {replicas} alive"));
            tokio::time::sleep(self.settings.poll_every).await;
        }
        (
            Outcome::Unknown,
            format!(
                "NOT_BACK: the group did not reach {replicas} alive within {} s",
                self.settings.back_timeout.as_secs()
            ),
        )
    }
}
