//! The local runtime with real (shell) processes.
use std::time::Duration;

use super::*;
use warden_core::ports::ExitStatus;

fn group(name: &str, count: u32, script: &str) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: [("GREETING".to_string(), "hello {node}".to_string())].into(),
        working_dir: None,
        count,
        node_name: Some("{group}-{index}@test".into()),
    }
}

fn start(dir: &std::path::Path, groups: Vec<GroupSpec>) -> (LocalRuntime, CancellationToken) {
    let cancel = CancellationToken::new();
    let settings = LocalSettings {
        groups,
        log_dir: dir.to_path_buf(),
        stop_grace: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(100),
        sample_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let rt = LocalRuntime::start(
        settings,
        "default".into(),
        cancel.clone(),
        TaskTracker::new(),
    )
    .unwrap();
    (rt, cancel)
}

async fn until<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key(id: &str) -> WorkerKey {
    WorkerKey::new(Backend::Celery, "default", id)
}

async fn info(rt: &LocalRuntime, id: &str) -> InstanceInfo {
    rt.instance(&key(id)).await.unwrap()
}

const SLEEPER: &str = "echo \"$GREETING\"; exec sleep 1000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_logs_and_respawns_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, cancel) = start(dir.path(), vec![group("g", 2, SLEEPER)]);
    assert!(rt.manages(&key("g-1@test")).await.unwrap());
    assert_eq!(rt.find("g-0@test").await.unwrap(), vec![key("g-0@test")]);
    let w = key("g-0@test");
    let mut first = info(&rt, "g-0@test").await;
    until("running", || {
        first = rt.info(&rt.slot(&w).unwrap());
        first.running
    })
    .await;
    let pid = first.pid.unwrap();
    // Its output (with the placeholders expanded) is captured.
    let mut page = LogPage::default();
    for _ in 0..200 {
        page = rt.read_log(&w, None, 10).await.unwrap();
        if !page.lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(page.lines[0].text, "hello g-0@test");
    assert_eq!(page.lines[0].source, format!("pid:{pid}"));

    let mut feed = rt.follow_log(&w).await.unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    match feed.next().await.unwrap() {
        LogEvent::Exited { source, status } => {
            assert_eq!(source, format!("pid:{pid}"));
            assert_eq!(status, ExitStatus::Signal(9));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        feed.next().await.unwrap(),
        LogEvent::Started { .. }
    ));
    let mut after = first.clone();
    until("respawned", || {
        after = rt.info(&rt.slot(&w).unwrap());
        after.running && after.pid != Some(pid)
    })
    .await;
    assert_eq!(after.restarts, 1);
    let exit = after.last_exit.unwrap();
    assert_eq!(exit.status, ExitStatus::Signal(9));
    assert!(!exit.requested);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_process_stays_stopped_until_started() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, cancel) = start(dir.path(), vec![group("g", 1, SLEEPER)]);
    let w = key("g-0@test");
    until("running", || rt.info(&rt.slot(&w).unwrap()).running).await;
    rt.stop(&w, Duration::from_secs(2)).await.unwrap();
    let stopped = info(&rt, "g-0@test").await;
    assert!(!stopped.running && stopped.held_stopped);
    // SIGTERM ended `sleep`: a requested exit, by signal 15.
    assert_eq!(
        stopped.last_exit.as_ref().unwrap().status,
        ExitStatus::Signal(15)
    );
    assert!(stopped.last_exit.as_ref().unwrap().requested);
    // Longer than the backoff: still not respawned.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!info(&rt, "g-0@test").await.running);
    rt.start(&w).await.unwrap();
    let started = info(&rt, "g-0@test").await;
    assert!(started.running && !started.held_stopped);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_kills_a_process_that_ignores_sigterm_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, cancel) = start(
        dir.path(),
        vec![group(
            "g",
            1,
            "trap '' TERM; while true; do sleep 0.05; done",
        )],
    );
    let w = key("g-0@test");
    // A restart without a caller's grace gets the configured stop grace.
    assert_eq!(rt.default_grace(), rt.inner.settings.stop_grace);
    until("running", || rt.info(&rt.slot(&w).unwrap()).running).await;
    let before = info(&rt, "g-0@test").await.pid;
    rt.restart(&w, RestartMode::Instance, Duration::from_millis(300))
        .await
        .unwrap();
    let after = info(&rt, "g-0@test").await;
    assert!(after.running);
    assert_ne!(after.pid, before);
    assert_eq!(after.last_exit.unwrap().status, ExitStatus::Signal(9));
    assert_eq!(after.restarts, 1);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_adds_and_removes_slots_and_rss_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, cancel) = start(dir.path(), vec![group("g", 1, SLEEPER)]);
    rt.scale("g", 3).await.unwrap();
    assert_eq!(rt.workers().len(), 3);
    until("all running", || {
        rt.workers()
            .iter()
            .all(|(k, _, _)| rt.info(&rt.slot(k).unwrap()).running)
    })
    .await;
    until("rss measured", || {
        rt.info(&rt.slot(&key("g-2@test")).unwrap())
            .rss_bytes
            .is_some_and(|b| b > 0)
    })
    .await;
    rt.scale("g", 1).await.unwrap();
    assert_eq!(rt.workers().len(), 1);
    assert!(matches!(
        rt.instance(&key("g-2@test")).await,
        Err(PortError::NotFound(_))
    ));
    assert!(matches!(
        rt.scale("nope", 1).await,
        Err(PortError::NotFound(_))
    ));
    cancel.cancel();
}

#[tokio::test]
async fn a_follower_that_falls_behind_is_told_how_many_events_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = SlotLog::open(
        LogLimits {
            dir: dir.path().to_path_buf(),
            file_bytes: 1 << 30,
            files: 2,
        },
        "g-0".into(),
    )
    .unwrap();
    let mut feed = Follower(log.subscribe());
    let extra = 10;
    let text: String = (0..FOLLOW_BUFFER + extra)
        .map(|i| format!("line {i}\n"))
        .collect();
    log.pump(
        tokio::io::BufReader::new(text.as_bytes()),
        logfile::Stream::Stdout,
        1,
    )
    .await;
    // Memory stays bounded: the oldest are gone, and the follower learns how many.
    assert_eq!(feed.try_next(), Some(LogEvent::Lagged(extra as u64)));
    match feed.next().await {
        Some(LogEvent::Line(l)) => assert_eq!(l.text, format!("line {extra}")),
        other => panic!("{other:?}"),
    }
    // All of them are in the file nonetheless.
    let page = log.read(None, 10 * FOLLOW_BUFFER).unwrap();
    assert_eq!(page.lines.len(), FOLLOW_BUFFER + extra);
}
