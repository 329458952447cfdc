//! `scripts/demo --check`: the demo (private Redis, two real Celery workers, a trickle of
//! tasks, warden) comes up, processes tasks that warden reports, and cleans up after itself.
mod support;

use std::process::Command;

use support::*;

#[test]
fn demo_runs_and_stops_everything_it_started() {
    let (ok, stdout, stderr) = run(Command::new(repo().join("scripts/demo"))
        .args(["--check", "20"])
        .env("WARDEN_DEMO_PROFILE", "debug")
        // The binary cargo built for this test: no nested cargo build on a locked target dir.
        .env("WARDEN_DEMO_BIN", env!("CARGO_BIN_EXE_warden"))
        .env("WARDEN_TEST_VENV", venv())
        .env_remove("WARDEN_DEMO_KEEP_LOGS"));
    assert!(
        ok,
        "demo check failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("demo check passed"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.contains("processed_tasks"))
        .unwrap_or_default();
    assert!(
        summary.contains("demo1@") && summary.contains("demo2@"),
        "{stdout}"
    );

    // Everything it started is gone: processes, the Redis port, the state directory.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("demo: "))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .to_string()
    };
    let pids: Vec<String> = line
        .split("pids=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(pids.len(), 5, "redis, two workers, trickle, warden: {line}");
    for pid in &pids {
        let group = Command::new("pgrep")
            .args(["-g", pid])
            .output()
            .expect("pgrep");
        assert!(
            group.stdout.is_empty(),
            "process group {pid} still has members: {}",
            String::from_utf8_lossy(&group.stdout)
        );
    }
    let redis_port: u16 = field("redis_port").parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err());
    assert!(!std::path::Path::new(&field("state")).exists());
}
