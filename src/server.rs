//! Assembles a running warden: the broker probe, the fleet owner, the inspect poller, the gRPC
//! server (services, health, reflection, auth, tracing) and the HTTP side port. Everything it
//! starts stops on one cancellation token, in order.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::ServingStatus;
use tracing::{info, warn};
use warden_celery::{
    control::Control,
    lock::{LOCK_TTL, Locks},
};
use warden_core::audit::{AuditLog, MemoryAudit};

use crate::{
    api::{
        alerts::AlertsService, auth::Authenticator, control::ControlService,
        history::HistoryService, logs::LogsService, worker_health::WorkerHealthService,
    },
    celery::{
        broker::Broker, events::EventFollower, pidbox::Pidbox, poller::Inspector, probe, queues,
    },
    config::{Config, Role},
    control::{ControlSettings, Controller},
    fleet::{
        self, BrokerStatus, Clock, FleetHandle, FleetSettings, SystemClock, Thresholds,
        ports::Runtime,
    },
    metrics::Metrics,
    proto::{
        FILE_DESCRIPTOR_SET,
        v1::{
            alerts_server::AlertsServer, control_server::ControlServer,
            history_server::HistoryServer, logs_server::LogsServer,
            worker_health_server::WorkerHealthServer,
        },
    },
    telemetry,
};

/// Longest any unary RPC may run (clients may ask for less with `grpc-timeout`).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for background tasks before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("broker: {0}")]
    Broker(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("{0}")]
    History(String),
    #[error("resources: {0}")]
    Resources(String),
    #[error("alerting: {0}")]
    Alerting(String),
    #[error("runtime: {0}")]
    Runtime(String),
}

/// A running warden.
pub struct Warden {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub fleet: FleetHandle,
    pub metrics: Metrics,
    /// Where workers run, when warden knows (the local or the Kubernetes runtime); `None`
    /// otherwise.
    pub runtime: Option<Arc<dyn Runtime>>,
    /// Workers auto-recovery would restart but may not (a cap is reached), and why.
    pub recovery_exhausted: crate::recovery::Exhausted,
    /// The alert engine and the notification dispatcher.
    pub alerting: crate::alerting::Alerting,
    /// How long shutdown waits for background tasks (longer when local processes must stop).
    shutdown_grace: Duration,
    cancel: CancellationToken,
    /// Every background task, the gRPC and HTTP servers included: none is detached.
    tasks: TaskTracker,
}

const SERVICE_NAMES: [&str; 6] = [
    "",
    "warden.v1.WorkerHealth",
    "warden.v1.History",
    "warden.v1.Logs",
    "warden.v1.Control",
    "warden.v1.Alerts",
];

impl Warden {
    /// Binds both ports and starts everything with the real clock.
    pub async fn start(config: Config) -> Result<Warden, ServerError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Warden, ServerError> {
        // One TLS provider for every client (kube, sqlx, reqwest, tonic); `main` installs it
        // first thing, and an embedding program or a test gets it here (a no-op when set).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The Kubernetes runtime first: a bad kubeconfig fails the start before any task runs.
        let kubernetes_runtime = match &config.kubernetes {
            Some(k) => Some(
                warden_kubernetes::KubernetesRuntime::connect(k.clone())
                    .await
                    .map_err(|e| ServerError::Runtime(format!("kubernetes: {e}")))?,
            ),
            None => None,
        };
        let kubernetes: Option<Arc<dyn Runtime>> = kubernetes_runtime
            .clone()
            .map(|k| Arc::new(k) as Arc<dyn Runtime>);
        let cancel = CancellationToken::new();
        let metrics = Metrics::new();
        let settings = config.broker_settings().map_err(ServerError::Broker)?;
        let broker = Broker::new(settings);
        let tasks = TaskTracker::new();
        let (status_tx, status_rx) = watch::channel(BrokerStatus::unknown());

        let thresholds = Thresholds {
            warning: config.heartbeat_warning,
            critical: config.heartbeat_critical,
        };
        let (fleet, owner) = fleet::spawn(
            FleetSettings {
                thresholds,
                evaluate_every: Duration::from_secs(1),
                max_workers: config.max_workers,
            },
            clock.clone(),
            Arc::new(metrics.clone()),
            cancel.clone(),
        );
        tasks.spawn(async move {
            let _ = owner.await;
        });
        tasks.spawn(probe::run(
            broker.clone(),
            clock.clone(),
            status_tx,
            fleet.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
        let scope: Arc<str> = Arc::from(crate::celery::DEFAULT_SCOPE);

        let inspector = Inspector::new(
            Pidbox::new(broker.clone(), metrics.clone()),
            fleet.clone(),
            scope.clone(),
            metrics.clone(),
            config.inspect_timeout,
            config.enable_events,
            tasks.clone(),
        );
        tasks.spawn(inspector.clone().run(
            config.inspect_interval,
            status_rx.clone(),
            cancel.clone(),
        ));
        let follower = EventFollower {
            broker: broker.clone(),
            scope: scope.clone(),
            greetings: Arc::new(tokio::sync::Semaphore::new(
                crate::celery::events::MAX_GREETINGS,
            )),
            tracker: tasks.clone(),
            fleet: fleet.clone(),
            pidbox: Pidbox::new(broker.clone(), metrics.clone()),
            metrics: metrics.clone(),
            enable_events: config.enable_events,
            refresher: Some(Arc::new(inspector.clone())),
            resp2_only: Default::default(),
        };
        tasks.spawn(follower.run(status_rx.clone(), cancel.clone()));
        tasks.spawn(queues::run(
            broker.clone(),
            fleet.clone(),
            metrics.clone(),
            config.queue_poll_interval,
            status_rx.clone(),
            cancel.clone(),
        ));

        // History: opened (and migrated) before serving (and before the
        // streams janitor, which journals its actions); recorded by a fleet subscriber.
        let (history, audit) = crate::history::open_with_audit(&config)
            .await
            .map_err(|e| ServerError::History(e.to_string()))?;
        // Without a store the audit trail is kept in memory, bounded (ListAudit says so).
        let audit: Arc<dyn AuditLog> = audit.unwrap_or_else(|| Arc::new(MemoryAudit::default()));
        // Events from outside the fleet (control, operations, alerts) reach history through
        // the journal; without a store it records nothing.
        let (journal, journal_inbox) = if history.is_some() {
            let (journal, inbox) =
                warden_core::journal::Journal::channel(warden_core::journal::JOURNAL_CAPACITY);
            (journal, Some(inbox))
        } else {
            (warden_core::journal::Journal::disconnected(), None)
        };
        if let Some(settings) = config.streams_settings() {
            fleet
                .observe(fleet::owner::FleetMessage::Source(
                    BrokerStatus::unknown_source(
                        warden_streams::SOURCE,
                        vec![fleet::Backend::RedisStreams],
                    ),
                ))
                .await
                .map_err(|e| ServerError::Broker(e.to_string()))?;
            tasks.spawn(warden_streams::janitor::run(
                settings.clone(),
                journal.clone(),
                cancel.clone(),
            ));
            tasks.spawn(warden_streams::reclaimer::run(
                settings.clone(),
                journal.clone(),
                cancel.clone(),
            ));
            tasks.spawn(warden_streams::run(settings, fleet.clone(), cancel.clone()));
        }

        if let Some(settings) = config.prometheus_settings() {
            let timeout = settings.timeout;
            let source = warden_resources::PrometheusSource::new(settings)
                .map_err(|e| ServerError::Resources(e.to_string()))?
                // Prometheus's side of a query joins warden's trace.
                .with_header_hook(Arc::new(crate::telemetry::inject_context));
            tasks.spawn(warden_resources::run(
                Arc::new(source),
                fleet.clone(),
                config.resource_interval,
                // Every query of a round within its own timeout, one after the other.
                timeout * 3,
                cancel.clone(),
            ));
        }

        if let (Some(store), Some(journal_inbox)) = (&history, journal_inbox) {
            tasks.spawn(warden_core::recorder::run(
                fleet.clone(),
                store.clone(),
                warden_core::recorder::RecorderSettings {
                    sample_every: config.sample_interval,
                    buffer_rows: config.history_buffer_rows,
                    retention: warden_core::history::Retention {
                        samples: config.retention_samples,
                        events: config.retention_events,
                        tables: config.retention_tables.clone(),
                    },
                    ..Default::default()
                },
                Arc::new(metrics.clone()),
                journal_inbox,
                cancel.clone(),
            ));
        }

        // The runtime: local processes when groups are configured, pods when the Kubernetes
        // runtime is turned on (validation refuses both).
        let runtime: Option<Arc<dyn Runtime>> = match (&config.local, kubernetes) {
            (_, Some(kubernetes)) => Some(kubernetes),
            (Some(settings), None) => Some(Arc::new(
                warden_runtime::LocalRuntime::start(
                    settings.clone(),
                    scope.clone(),
                    cancel.clone(),
                    tasks.clone(),
                )
                .map_err(|e| ServerError::Runtime(e.to_string()))?,
            )),
            (None, None) => None,
        };
        // Without Prometheus, the figures the runtime measures itself (/proc for local
        // processes) are the workers' resource figures.
        if let (Some(runtime), None, Some(local)) =
            (&runtime, &config.prometheus_url, &config.local)
        {
            tasks.spawn(warden_resources::run(
                Arc::new(warden_resources::RuntimeSource::new(runtime.clone())),
                fleet.clone(),
                local.sample_interval,
                local.sample_interval.max(Duration::from_secs(5)),
                cancel.clone(),
            ));
        }
        // Without Prometheus, pods' figures come from the metrics API (metrics-server).
        if let (Some(k), None) = (&kubernetes_runtime, &config.prometheus_url) {
            tasks.spawn(warden_resources::run(
                Arc::new(warden_kubernetes::PodMetricsSource::new(k.clone())),
                fleet.clone(),
                config.resource_interval,
                config
                    .kubernetes
                    .as_ref()
                    .map_or(Duration::from_secs(10), |k| k.call_timeout * 2),
                cancel.clone(),
            ));
        }
        let shutdown_grace = config.local.as_ref().map_or(SHUTDOWN_GRACE, |l| {
            SHUTDOWN_GRACE.max(l.stop_grace + SHUTDOWN_GRACE)
        });

        let grpc_listener = bind("gRPC", config.grpc_addr).await?;
        let http_listener = bind("HTTP", config.http_addr).await?;
        let grpc_addr = local_addr("gRPC", &grpc_listener, config.grpc_addr)?;
        let http_addr = local_addr("HTTP", &http_listener, config.http_addr)?;

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for name in SERVICE_NAMES {
            health_reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        tasks.spawn(report_health(
            health_reporter,
            status_rx.clone(),
            cancel.clone(),
        ));

        let auth = Authenticator::new(config.tokens.clone());
        // A refresh gathers replies for the inspect timeout; one broker timeout on top covers
        // its round-trips. A broker that stalls costs the caller no more than that.
        let refresh_budget = config.inspect_timeout + config.broker_timeout;
        let worker_health = WorkerHealthService::new(
            fleet.clone(),
            Some(Arc::new(inspector)),
            refresh_budget,
            config.watch_bookmark_interval,
            tasks.clone(),
        )
        .with_runtime(runtime.clone());
        let controller = Controller::new(
            fleet.clone(),
            Control::new(
                Pidbox::new(broker.clone(), metrics.clone()),
                config.inspect_timeout.max(Duration::from_secs(1)) + config.broker_timeout,
            ),
            Locks::new(broker.clone(), LOCK_TTL),
            // Where workers run (POD / process restarts, stop, scale), when a runtime is set.
            runtime.clone(),
            ControlSettings::default(),
            tasks.clone(),
            cancel.clone(),
        )
        .with_journal(journal.clone());
        // The last hour's restarts, from history: auto-recovery's caps hold across a restart
        // of warden.
        if let Some(store) = &history {
            match controller.ledger().load(store.as_ref(), clock.now()).await {
                Ok(n) => tracing::debug!(restarts = n, "restart ledger loaded from history"),
                Err(err) => tracing::warn!(%err, "could not read the last hour's restarts"),
            }
        }
        let recovery_exhausted = crate::recovery::Exhausted::default();
        let recovery_policy: crate::recovery::SharedPolicy = Arc::new(std::sync::Mutex::new(
            crate::recovery::Policy::new(config.recovery.clone(), clock.now())
                .map_err(|e| ServerError::Runtime(format!("recovery: {e}")))?,
        ));
        if runtime.is_some() {
            let recovery = crate::recovery::Recovery::new(
                recovery_policy.clone(),
                controller.clone(),
                audit.clone(),
                recovery_exhausted.clone(),
            );
            tasks.spawn(recovery.run(config.recovery.interval, cancel.clone()));
        }
        // Health: every worker checked on an interval; verdicts into the fleet.
        let evaluator = warden_health::Evaluator::new(&config.health_config())
            .map_err(|e| ServerError::Alerting(format!("health: {e}")))?;
        let (baselines_tx, baselines) =
            tokio::sync::watch::channel(Arc::new(warden_health::Baselines::default()));
        let health = warden_health::spawn(fleet.clone(), evaluator, baselines, cancel.clone());
        let health_summaries = health.summaries.clone();
        let health_task = health.task;
        tasks.spawn(async move {
            let _ = health_task.await;
        });
        if let Some(store) = &history {
            tasks.spawn(crate::baselines::run(
                fleet.clone(),
                store.clone(),
                baselines_tx,
                cancel.clone(),
            ));
        }
        // Alerts over the fleet and its health; notifications to the configured receivers.
        let alerting = crate::alerting::Alerting::start(
            config.alerts.clone(),
            &config.notify,
            fleet.clone(),
            journal.clone(),
            crate::alerting::MonitoringInputs {
                recovery_exhausted: recovery_exhausted.clone(),
                health: Some(health_summaries),
            },
            metrics.clone(),
            &tasks,
            cancel.clone(),
        )
        .map_err(|e| ServerError::Alerting(e.to_string()))?;
        let alerts_service = AlertsService::new(alerting.clone(), audit.clone());
        let control = ControlService::new(fleet.clone(), controller, audit)
            .with_recovery(recovery_policy.clone(), config.health.interval)
            .with_streams(
                config
                    .streams_settings()
                    .and_then(|s| warden_streams::control::StreamsControl::new(s).ok()),
            );

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;

        let mut builder = Server::builder()
            .trace_fn(telemetry::grpc_span)
            .timeout(RPC_TIMEOUT)
            .concurrency_limit_per_connection(256);
        if let Some(tls) = &config.tls {
            let cert = tokio::fs::read(&tls.cert)
                .await
                .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert.display())))?;
            let key = tokio::fs::read(&tls.key)
                .await
                .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key.display())))?;
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .map_err(|e| ServerError::Tls(e.to_string()))?;
        }
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(WorkerHealthServer::with_interceptor(
                worker_health,
                auth.interceptor(Some(Role::Viewer), false),
            ))
            .add_service(HistoryServer::with_interceptor(
                HistoryService::new(fleet.clone(), history.clone()),
                auth.interceptor(Some(Role::Viewer), false),
            ))
            .add_service(LogsServer::with_interceptor(
                LogsService::new(fleet.clone(), runtime.clone(), cancel.clone()),
                auth.interceptor(Some(Role::Operator), false),
            ))
            // Alerts checks roles itself, so that refused changes are audited.
            .add_service(AlertsServer::with_interceptor(
                alerts_service,
                auth.interceptor(None, true),
            ))
            // Control checks roles itself, so that refusals are audited with the request.
            .add_service(ControlServer::with_interceptor(
                control,
                auth.interceptor(None, true),
            ));
        let grpc_cancel = cancel.clone();
        tasks.spawn(async move {
            // Without TCP_NODELAY, small HTTP/2 frames wait on delayed ACKs (40 ms stalls seen
            // in benches/fleet_scale.rs); keepalive notices vanished clients.
            let incoming = TcpIncoming::from(grpc_listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60)));
            if let Err(err) = router
                .serve_with_incoming_shutdown(incoming, grpc_cancel.cancelled_owned())
                .await
            {
                warn!(%err, "gRPC server stopped with an error");
            }
        });

        let http_cancel = cancel.clone();
        let http_router = crate::http::router(
            status_rx,
            metrics.clone(),
            fleet.snapshots(),
            config.export_options(),
        );
        tasks.spawn(async move {
            if let Err(err) = axum::serve(http_listener, http_router)
                .with_graceful_shutdown(http_cancel.cancelled_owned())
                .await
            {
                warn!(%err, "HTTP server stopped with an error");
            }
        });

        info!(
            grpc = %grpc_addr,
            http = %http_addr,
            broker = broker.display_url(),
            tls = config.tls.is_some(),
            auth = !config.tokens.is_empty(),
            "warden serving"
        );
        Ok(Warden {
            grpc_addr,
            http_addr,
            fleet,
            metrics,
            runtime,
            recovery_exhausted,
            alerting,
            shutdown_grace,
            cancel,
            tasks,
        })
    }

    /// A token that stops this warden when cancelled.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops accepting, ends streams, stops background tasks; waits at most a grace period.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.shutdown_grace, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                still_running = self.tasks.len(),
                "some tasks did not stop within {:?}; leaving them to the runtime",
                self.shutdown_grace
            );
        }
        info!("warden stopped");
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// Mirrors broker connectivity into `grpc.health.v1`: NOT_SERVING while the broker is down,
/// and on shutdown.
async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    mut broker: watch::Receiver<BrokerStatus>,
    cancel: CancellationToken,
) {
    loop {
        let status = if broker.borrow_and_update().connected {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in SERVICE_NAMES {
            reporter.set_service_status(name, status).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = broker.changed() => if changed.is_err() { break },
        }
    }
    for name in SERVICE_NAMES {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}
