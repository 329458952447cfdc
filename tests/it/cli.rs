//! The binary itself: config errors, --help, and graceful shutdown on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use tokio::io::AsyncReadExt as _;

use crate::support::*;

fn warden() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WARDEN_") {
            cmd.env_remove(key);
        }
    }
    // No history file in the working directory: these tests are not about history.
    cmd.env("WARDEN_DATABASE_URL", "none");
    cmd
}

#[test]
fn invalid_config_exits_non_zero_naming_key_and_value() {
    let (ok, _, stderr) = run_blocking(warden().args(["serve", "--inspect-interval", "soon"]));
    assert!(!ok);
    assert!(
        stderr.contains("--inspect-interval") && stderr.contains("soon"),
        "{stderr}"
    );

    let (ok, _, stderr) = run_blocking(warden().args(["serve", "--grpc-addr", "0.0.0.0:0"]));
    assert!(!ok);
    assert!(
        stderr.contains("grpc_addr") && stderr.contains("0.0.0.0:0"),
        "{stderr}"
    );

    let (ok, _, stderr) = run_blocking(
        warden()
            .args(["serve", "--inspect-timeout", "40s"])
            .env("WARDEN_INSPECT_INTERVAL", "30s"),
    );
    assert!(!ok);
    assert!(
        stderr.contains("inspect_timeout") && stderr.contains("40s"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "broker_url = \"amqp://guest@localhost//\"\n").unwrap();
    let (ok, _, stderr) = run_blocking(warden().args(["serve", "--config"]).arg(&file));
    assert!(!ok);
    assert!(
        stderr.contains("broker_url") && stderr.contains("amqp://"),
        "{stderr}"
    );

    let (ok, _, stderr) = run_blocking(
        warden()
            .args(["serve"])
            .env("WARDEN_TOKENS", "bob:root:xxxxxxxxxxxxxxxxxxxxxxxx"),
    );
    assert!(!ok);
    assert!(
        stderr.contains("WARDEN_TOKENS") && !stderr.contains("xxxxxxxx"),
        "{stderr}"
    );
}

#[test]
fn serve_help_documents_every_default() {
    let (ok, stdout, _) = run_blocking(warden().args(["serve", "--help"]));
    assert!(ok);
    for expected in [
        "WARDEN_BROKER_URL",
        "redis://127.0.0.1:6379/0",
        "WARDEN_GRPC_ADDR",
        warden::config::DEFAULT_GRPC_ADDR,
        warden::config::DEFAULT_HTTP_ADDR,
        "[default: 30s]",
        "[default: 1s]",
        "[default: 5s]",
        "[default: 2s]",
        "[default: 60s]",
        "[default: info]",
        "--insecure",
        "--tokens-file",
        "--tls-cert",
    ] {
        assert!(
            stdout.contains(expected),
            "--help lacks {expected:?}:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    let redis = RedisServer::start().await;
    let (grpc, http) = (reserve_port(), reserve_port());
    let mut child = tokio::process::Command::from(warden())
        .args(["serve", "--broker", &redis.url(0)])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read its log while it runs (a full pipe would stall it).
    let mut stdout = child.stdout.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut logs = String::new();
        let _ = stdout.read_to_string(&mut logs).await;
        logs
    });
    wait_for_port(grpc.get(), Duration::from_secs(20), "warden").await;
    let pid = child.id().expect("running").to_string();
    let (ok, _, stderr) = run(Command::new("kill").args(["-TERM", &pid])).await;
    assert!(ok, "{stderr}");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("warden stops within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let logs = logs.await.unwrap();
    assert!(
        logs.contains("shutdown signal received") && logs.contains("warden stopped"),
        "{logs}"
    );
}
