//! `rediss://`: warden talks TLS to the broker and verifies its certificate against the
//! system trust store (extended here with `SSL_CERT_FILE`, as an operator with a private CA
//! would). warden runs as the real binary so that the variable is its own.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::*;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`cert.pem`, `key.pem`): what webpki accepts, unlike a self-signed leaf.
fn make_certificates(dir: &Path) {
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
        let (ok, _, stderr) = run(Command::new("openssl").current_dir(dir).args(args));
        assert!(
            ok,
            "openssl {args:?} (scripts/test installs openssl): {stderr}"
        );
    }
}

fn start_tls_redis(dir: &Path, port: u16) -> Reap {
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
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    wait_for_port(port, Duration::from_secs(10), "TLS redis-server");
    Reap(child)
}

fn start_warden(broker: &str, ca: Option<&Path>) -> (Reap, String) {
    let (grpc, http) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(["serve", "--broker", broker, "--inspect-interval", "2s"])
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
        ])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::null());
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let child = Reap(cmd.spawn().unwrap());
    wait_for_port(grpc, Duration::from_secs(20), "warden");
    (child, format!("http://127.0.0.1:{grpc}"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_broker_with_a_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let port = free_port();
    let _redis = start_tls_redis(dir.path(), port);
    let ca = dir.path().join("ca.pem");
    let worker_url = format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
        ca.display()
    );
    let _worker = CeleryWorker::start(&worker_url, "tls@secure", WorkerOptions::default());
    let broker = format!("rediss://127.0.0.1:{port}/0");

    // Trusting the broker's CA: connected, and the worker is found over TLS.
    let (_trusting, url) = start_warden(&broker, Some(&ca));
    eventually(Duration::from_secs(15), "SERVING over TLS", || {
        let url = url.clone();
        async move { (status(&url).await == ServingStatus::Serving).then_some(()) }
    })
    .await;
    let mut client =
        warden::proto::v1::worker_health_client::WorkerHealthClient::connect(url.clone())
            .await
            .unwrap();
    eventually(Duration::from_secs(30), "worker found over TLS", || {
        let mut client = client.clone();
        async move {
            find(&list(&mut client, false).await, "tls@secure")
                .filter(|w| w.pool.is_some())
                .map(|_| ())
        }
    })
    .await;
    let _ = &mut client;

    // Not trusting it: the certificate is refused, never silently accepted.
    let (_doubting, url) = start_warden(&broker, None);
    eventually(
        Duration::from_secs(10),
        "readiness reports the refusal",
        || {
            let url = url.clone();
            async move { (status(&url).await == ServingStatus::NotServing).then_some(()) }
        },
    )
    .await;
    // It stays refused (checked over several probes, not one).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(status(&url).await, ServingStatus::NotServing);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_port_serves_tls_and_the_cli_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (grpc, http) = (free_port(), free_port());
    let _warden = Reap(
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args([
                "serve",
                "--broker",
                &format!("redis://127.0.0.1:{}/0", free_port()),
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
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(grpc, Duration::from_secs(20), "warden");
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
        .arg(&ca));
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    // Without trusting the CA: refused.
    let (ok, _, stderr) = run(Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["workers", "--server", &https])
        .env_remove("SSL_CERT_FILE"));
    assert!(!ok, "an untrusted certificate must be refused");
    assert!(!stderr.is_empty());
    // Plaintext to a TLS port fails.
    let (ok, _, _) = run(Command::new(env!("CARGO_BIN_EXE_warden")).args([
        "workers",
        "--server",
        &format!("http://127.0.0.1:{grpc}"),
    ]));
    assert!(!ok);
}
