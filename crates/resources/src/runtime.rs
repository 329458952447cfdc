//! CPU and memory from the runtime that runs the workers (the local runtime reads /proc for
//! each process tree, pool children included), as a resource source: what warden measures
//! itself where no Prometheus is configured.
use std::{sync::Arc, time::SystemTime};

use warden_core::{
    model::{Sample, WorkerKey, metric},
    ports::{BoxFuture, MetricSource, PortError, Runtime},
};

/// The source's name in samples and source statuses.
pub const RUNTIME_SOURCE: &str = "runtime";

/// Reads each worker's instance figures from a runtime.
pub struct RuntimeSource {
    runtime: Arc<dyn Runtime>,
}

impl RuntimeSource {
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self { runtime }
    }
}

impl MetricSource for RuntimeSource {
    fn name(&self) -> &'static str {
        RUNTIME_SOURCE
    }

    /// One sample per worker the runtime runs and has measured; the others are left out (a
    /// worker it does not manage, or not measured yet, has no figure rather than 0).
    fn collect<'a>(
        &'a self,
        workers: &'a [WorkerKey],
    ) -> BoxFuture<'a, Result<Vec<Sample>, PortError>> {
        Box::pin(async move {
            let mut samples = Vec::new();
            for worker in workers {
                let info = match self.runtime.instance(worker).await {
                    Ok(info) => info,
                    Err(PortError::NotFound(_) | PortError::NotSupported(_)) => continue,
                    Err(err) => return Err(err),
                };
                let mut metrics = Vec::new();
                if let Some(cpu) = info.cpu_percent {
                    metrics.push((metric::CPU_PERCENT, cpu));
                }
                if let Some(rss) = info.rss_bytes {
                    metrics.push((metric::MEMORY_BYTES, rss as f64));
                }
                if !metrics.is_empty() && info.running {
                    samples.push(Sample {
                        worker: worker.clone(),
                        at: SystemTime::now(),
                        source: RUNTIME_SOURCE,
                        metrics,
                    });
                }
            }
            Ok(samples)
        })
    }
}
