//! OpenTelemetry, proven: warden (the binary, configured by the standard `OTEL_*` variables)
//! exports its spans over OTLP/gRPC to a collector started by the test (a tonic server of
//! OTLP's trace service), and a gRPC call made with a W3C `traceparent` yields server spans in
//! the caller's trace, with warden's resource attributes.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_grpc_call_reaches_the_otlp_collector_in_the_callers_trace() {
    let collector = Collector::default();
    let otlp = reserve_port();
    let otlp_addr = format!("127.0.0.1:{}", otlp.get());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve(otlp_addr.parse().unwrap()),
    );
    wait_for_port(otlp.get(), Duration::from_secs(10), "the OTLP collector").await;

    let redis = RedisServer::start().await;
    let (grpc, http) = (reserve_port(), reserve_port());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WARDEN_") || key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args(["serve", "--broker", &redis.url(0)])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", grpc.get())])
        .args(["--http-addr", &format!("127.0.0.1:{}", http.get())])
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

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut client = WorkerHealthClient::connect(format!("http://127.0.0.1:{}", grpc.get()))
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
