//! `scripts/demo --check`: the demo (private Redis, two real Celery workers, a trickle of
//! tasks, warden) comes up, processes tasks that warden reports, and cleans up after itself.

use std::process::Command;

use crate::support::*;

#[test]
fn demo_runs_and_stops_everything_it_started() {
    let (ok, stdout, stderr) = run_blocking(
        Command::new(repo().join("scripts/demo"))
            .args(["--check", "20"])
            .env("WARDEN_DEMO_PROFILE", "debug")
            // The binary cargo built for this test: no nested cargo build on a locked target dir.
            .env("WARDEN_DEMO_BIN", env!("CARGO_BIN_EXE_warden"))
            .env("WARDEN_TEST_VENV", venv())
            .env_remove("WARDEN_DEMO_KEEP_LOGS"),
    );
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
    let table = Command::new("ps")
        .args(["-e", "-o", "pgid=,pid=,stat=,args="])
        .output()
        .expect("ps");
    let table = String::from_utf8_lossy(&table.stdout);
    for pid in &pids {
        // Zombies have exited (an orphan waits for its reaper, which in a container may be
        // slow to come); anything else in the group is a leak.
        let left: Vec<&str> = table
            .lines()
            .filter(|l| {
                let mut cols = l.split_whitespace();
                cols.next() == Some(pid.as_str()) && !cols.nth(1).unwrap_or("").starts_with('Z')
            })
            .collect();
        assert!(left.is_empty(), "left running: {left:#?}");
    }
    let redis_port: u16 = field("redis_port").parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err());
    assert!(!std::path::Path::new(&field("state")).exists());
}
