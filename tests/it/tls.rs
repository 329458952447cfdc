//! `rediss://`: warden talks TLS to the broker and verifies its certificate against the
//! system trust store (extended here with `SSL_CERT_FILE`, as an operator with a private CA
//! would). warden runs as the real binary so that the variable is its own.

use std::{
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::support::*;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use warden::proto::v1::{self as pb, worker_health_client::WorkerHealthClient};

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`cert.pem`, `key.pem`): what webpki accepts, unlike a self-signed leaf.
async fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=warden test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let (ok, _, stderr) = run(Command::new("openssl").current_dir(dir).args(args)).await;
        assert!(
            ok,
            "openssl {args:?} (scripts/test installs openssl): {stderr}"
        );
    }
}

/// A redis-server that speaks only TLS, with the certificates of `dir`.
struct TlsRedis {
    _child: Reap,
    port: Port,
    _logs: LogDir,
}

async fn start_tls_redis(dir: &Path) -> TlsRedis {
    let port = reserve_port();
    let logs = LogDir::new("tls redis-server");
    let child = Command::new("redis-server")
        .current_dir(dir)
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "cert.pem",
            "--tls-key-file",
            "key.pem",
            "--tls-ca-cert-file",
            "cert.pem",
        ])
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--logfile")
        .arg(logs.file("redis.log"))
        .stdout(logs.stdio("redis.out"))
        .stderr(logs.stdio("redis.out"))
        .spawn()
        .expect("redis-server");
    let child = Reap(child);
    wait_for_port(port.get(), Duration::from_secs(10), "TLS redis-server").await;
    TlsRedis {
        _child: child,
        port,
        _logs: logs,
    }
}

/// The warden binary, with its reserved ports and its logs (dropped in this order: the
/// process is gone before its ports are released).
struct WardenBinary {
    _child: Reap,
    _ports: [Port; 2],
    _logs: LogDir,
    grpc_url: String,
    http_url: String,
}

async fn start_warden(broker: &str, ca: Option<&Path>) -> WardenBinary {
    let (grpc, http) = (reserve_port(), reserve_port());
    let logs = LogDir::new("warden");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(["serve", "--broker", broker, "--inspect-interval", "2s"])
        .args(["--database-url", "none"])
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
        ])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdout(logs.stdio("warden.log"))
        .stderr(logs.stdio("warden.log"));
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let child = Reap(cmd.spawn().unwrap());
    wait_for_port(grpc.get(), Duration::from_secs(20), "warden").await;
    WardenBinary {
        _child: child,
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        http_url: format!("http://127.0.0.1:{http}"),
        _ports: [grpc, http],
        _logs: logs,
    }
}

async fn status(url: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// The broker's entry in ListWorkers' `freshness.sources` (set once a probe has run).
async fn broker_status(url: &str) -> Option<pb::SourceStatus> {
    let mut client = WorkerHealthClient::connect(url.to_string()).await.ok()?;
    broker_source(&list(&mut client, false).await).cloned()
}

/// Broker probes by outcome, read from the binary's /metrics.
async fn probe_counts(http_url: &str) -> Vec<(String, f64)> {
    // reqwest's TLS provider (the workspace builds it without a default one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = reqwest::get(format!("{http_url}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("warden_broker_probes_total{outcome=\"")?;
            let (outcome, value) = rest.split_once("\"} ")?;
            Some((outcome.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Whether a reason names a certificate (or TLS) failure.
fn certificate_error(reason: &str) -> bool {
    let reason = reason.to_lowercase();
    reason.contains("certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_broker_with_a_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path()).await;
    let redis = start_tls_redis(dir.path()).await;
    let port = redis.port.get();
    let ca = dir.path().join("ca.pem");
    let worker_url = format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
        ca.display()
    );
    let _worker = CeleryWorker::start(&worker_url, "tls@secure", WorkerOptions::default());
    let broker = format!("rediss://127.0.0.1:{port}/0");

    // Trusting the broker's CA: connected, and the worker is found over TLS.
    let trusting = start_warden(&broker, Some(&ca)).await;
    let url = trusting.grpc_url.clone();
    eventually(Duration::from_secs(15), "SERVING over TLS", || {
        let url = url.clone();
        async move { (status(&url).await == ServingStatus::Serving).then_some(()) }
    })
    .await;
    let client = WorkerHealthClient::connect(url.clone()).await.unwrap();
    eventually(Duration::from_secs(30), "worker found over TLS", || {
        let mut client = client.clone();
        async move {
            find(&list(&mut client, false).await, "tls@secure")
                .filter(|w| w.pool.is_some())
                .map(|_| ())
        }
    })
    .await;
    let source = broker_status(&url).await.expect("probed");
    assert!(source.available && source.reason.is_empty(), "{source:?}");

    // Not trusting it: the certificate is refused, never silently accepted, and the reason
    // says so. Before the first probe the broker is merely "not connected yet": a reason
    // naming the certificate can only come from a probe that failed on it.
    let doubting = start_warden(&broker, None).await;
    let url = doubting.grpc_url.clone();
    let source = eventually(
        Duration::from_secs(10),
        "the broker's certificate reported as refused",
        || {
            let url = url.clone();
            async move {
                broker_status(&url)
                    .await
                    .filter(|s| certificate_error(&s.reason))
            }
        },
    )
    .await;
    eprintln!("without the CA: {source:?}");
    assert!(!source.available, "{source:?}");
    assert!(source.last_ok.is_none(), "never connected: {source:?}");
    let probes = probe_counts(&doubting.http_url).await;
    let failed: f64 = probes
        .iter()
        .filter(|(outcome, _)| outcome != "ok")
        .map(|(_, n)| n)
        .sum();
    assert!(failed >= 1.0, "no failed probe counted: {probes:?}");
    assert!(
        !probes
            .iter()
            .any(|(outcome, n)| outcome == "ok" && *n > 0.0),
        "a probe succeeded without trusting the CA: {probes:?}"
    );
    assert_eq!(status(&url).await, ServingStatus::NotServing);
    // It stays refused (checked over several probes, not one).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(status(&url).await, ServingStatus::NotServing);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let source = broker_status(&url).await.expect("probed");
    assert!(
        !source.available && certificate_error(&source.reason),
        "{source:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_port_serves_tls_and_the_cli_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path()).await;
    let (grpc, http, nobody) = (reserve_port(), reserve_port(), reserve_port());
    let logs = LogDir::new("warden");
    let _warden = Reap(
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args([
                "serve",
                "--database-url",
                "none",
                "--broker",
                &format!("redis://127.0.0.1:{nobody}/0"),
            ])
            .args([
                "--grpc-addr",
                &format!("127.0.0.1:{grpc}"),
                "--http-addr",
                &format!("127.0.0.1:{http}"),
            ])
            .arg("--tls-cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.path().join("key.pem"))
            .stdout(logs.stdio("warden.log"))
            .stderr(logs.stdio("warden.log"))
            .spawn()
            .unwrap(),
    );
    wait_for_port(grpc.get(), Duration::from_secs(20), "warden").await;
    let ca = dir.path().join("ca.pem");
    let https = format!("https://127.0.0.1:{grpc}");
    // With the CA: answers (an empty fleet, the broker is not there).
    let (ok, stdout, stderr) = run(Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "workers",
            "--output",
            "json",
            "--server",
            &https,
            "--ca-cert",
        ])
        .arg(&ca))
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    // Without trusting the CA: refused.
    let (ok, _, stderr) = run(Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["workers", "--server", &https])
        .env_remove("SSL_CERT_FILE"))
    .await;
    assert!(!ok, "an untrusted certificate must be refused");
    eprintln!("the CLI without the CA: {stderr}");
    assert!(!stderr.is_empty());
    // Plaintext to a TLS port fails.
    let (ok, _, _) = run(Command::new(env!("CARGO_BIN_EXE_warden")).args([
        "workers",
        "--server",
        &format!("http://127.0.0.1:{grpc}"),
    ]))
    .await;
    assert!(!ok);
}
