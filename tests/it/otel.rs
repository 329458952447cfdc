//! OpenTelemetry, proven: warden (the binary, configured by the standard `OTEL_*` variables)
//! exports its spans over OTLP/gRPC to a collector started by the test (a tonic server of
//! OTLP's trace service), and a gRPC call made with a W3C `traceparent` yields server spans in
//! the caller's trace, with warden's resource attributes. warden's requests to Prometheus (a
//! stand-in for its query API, recording headers) carry a `traceparent` of a span that
//! reaches the collector.
use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
};
use tonic::{Request, Response, Status};
use warden::proto::v1::{ListWorkersRequest, worker_health_client::WorkerHealthClient};

use crate::support::*;

/// Every export request the collector received.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span as the test reads it: its trace id, name and its resource's string attributes.
struct SeenSpan {
    trace_id: Vec<u8>,
    name: String,
    resource: Vec<(String, String)>,
}

impl Collector {
    fn spans(&self) -> Vec<SeenSpan> {
        let mut out = Vec::new();
        for request in self.0.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let resource: Vec<(String, String)> = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                        _ => None,
                    })
                    .collect();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        out.push(SeenSpan {
                            trace_id: span.trace_id.clone(),
                            name: span.name.clone(),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP collector on a free port: what it received, its address, and its server task.
async fn start_collector() -> (Collector, String, tokio::task::JoinHandle<()>) {
    let collector = Collector::default();
    let otlp = reserve_port();
    let otlp_addr = format!("127.0.0.1:{}", otlp.get());
    let server = tokio::spawn({
        let collector = collector.clone();
        let addr = otlp_addr.parse().unwrap();
        async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve(addr)
                .await;
        }
    });
    wait_for_port(otlp.get(), Duration::from_secs(10), "the OTLP collector").await;
    (collector, otlp_addr, server)
}

/// The warden binary serving `broker`, exporting spans to `otlp_addr`, with `extra` arguments;
/// returns it once its gRPC port is open.
async fn start_warden(
    broker: &str,
    otlp_addr: &str,
    extra: &[&str],
) -> (tokio::process::Child, u16) {
    let (grpc, http) = (reserve_port(), reserve_port());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WARDEN_") || key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    let child = cmd
        .args(["serve", "--broker", broker])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", grpc.get())])
        .args(["--http-addr", &format!("127.0.0.1:{}", http.get())])
        .args(extra)
        .env("WARDEN_DATABASE_URL", "none")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp_addr}"))
        // Export soon after a span ends, not after the default 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port(grpc.get(), Duration::from_secs(20), "warden").await;
    (child, grpc.get())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_grpc_call_reaches_the_otlp_collector_in_the_callers_trace() {
    let (collector, otlp_addr, server) = start_collector().await;
    let redis = RedisServer::start().await;
    let (mut child, grpc) = start_warden(&redis.url(0), &otlp_addr, &[]).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut client = WorkerHealthClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let mut request = Request::new(ListWorkersRequest::default());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    client.list_workers(request).await.unwrap();

    let spans = eventually(
        Duration::from_secs(20),
        "a span of the caller's trace at the collector",
        || {
            let spans: Vec<SeenSpan> = collector
                .spans()
                .into_iter()
                .filter(|s| hex(&s.trace_id) == trace_id)
                .collect();
            async move { (!spans.is_empty()).then_some(spans) }
        },
    )
    .await;
    let rpc = spans
        .iter()
        .find(|s| s.name.contains("ListWorkers"))
        .unwrap_or_else(|| {
            panic!(
                "no ListWorkers span in the trace: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    let attribute = |key: &str| {
        rpc.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(attribute("service.name").as_deref(), Some("warden"));
    assert_eq!(
        attribute("service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        attribute("service.instance.id").is_some_and(|id| !id.is_empty()),
        "{:?}",
        rpc.resource
    );
    // The standard variable's attributes are kept beside warden's own.
    assert_eq!(attribute("deployment.environment").as_deref(), Some("test"));

    let _ = child.kill().await;
    server.abort();
}

/// A stand-in for Prometheus's query API: answers every query with an empty vector and
/// records each request's `traceparent` (None when it had none).
async fn start_fake_prometheus() -> (
    u16,
    Arc<Mutex<Vec<Option<String>>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: http::HeaderMap| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(
                        headers
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    );
                    (
                        [("content-type", "application/json")],
                        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                    )
                }
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_query_carries_the_trace_of_an_exported_collection_span() {
    let (collector, otlp_addr, server) = start_collector().await;
    let (prometheus, seen, fake) = start_fake_prometheus().await;
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    // A worker in the fleet: with none, a collection round asks Prometheus nothing.
    let _worker = CeleryWorker::start(&broker, "celery@pod-a", WorkerOptions::default());
    let url = format!("http://127.0.0.1:{prometheus}");
    let (mut child, _) = start_warden(
        &broker,
        &otlp_addr,
        &["--prometheus-url", &url, "--resource-interval", "1s"],
    )
    .await;

    let traceparent = eventually(
        Duration::from_secs(60),
        "a Prometheus query with a traceparent",
        || {
            let found = seen.lock().unwrap().iter().flatten().next().cloned();
            async move { found }
        },
    )
    .await;
    // `00-<trace id>-<parent span id>-<flags>`, sampled.
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert_eq!(parts[3], "01", "not sampled: {traceparent}");
    let (trace_id, parent_id) = (parts[1].to_string(), parts[2].to_string());
    assert_ne!(trace_id, "0".repeat(32), "{traceparent}");

    // The round's span and the query's span (the header's parent) reach the collector, in the
    // header's trace.
    let spans = || -> Vec<(String, String)> {
        collector
            .0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| hex(&s.trace_id) == trace_id)
            .map(|s| (s.name.clone(), hex(&s.span_id)))
            .collect()
    };
    eventually(
        Duration::from_secs(20),
        "the collection round's span and the query's span at the collector",
        || {
            let spans = spans();
            let round = spans.iter().any(|(name, _)| name == "resources.collect");
            let query = spans
                .iter()
                .any(|(name, id)| name == "prometheus.query" && *id == parent_id);
            async move { (round && query).then_some(()) }
        },
    )
    .await;

    let _ = child.kill().await;
    fake.abort();
    server.abort();
}
