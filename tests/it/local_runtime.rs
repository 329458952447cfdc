//! The local runtime with real Celery workers that warden launches itself: 30 at once, a
//! SIGKILLed one respawned, a restart through the runtime, and Logs.Tail over their output.
use std::{sync::Arc, time::Duration};

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use warden::{
    fleet::{
        WorkerKey,
        ports::{ExitStatus, RestartMode, Runtime},
    },
    proto::v1::{self as pb, logs_client::LogsClient},
};
use warden_runtime::{GroupSpec, LocalSettings};

use crate::support::{
    LogDir, RedisServer, TestWarden, eventually, find, list, python_dir, submit, test_config, venv,
};

/// A group of solo-pool Celery workers of the test app, each consuming `queue` (and its own
/// node's queue), taking their node name from warden.
pub(crate) fn celery_group(name: &str, count: u32, broker: &str, queue: &str) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        command: venv().join("bin/celery").display().to_string(),
        args: [
            "-A",
            "warden_test_app",
            "worker",
            "-n",
            "{node}",
            "-P",
            "solo",
            "-Q",
            queue,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
        ]
        .map(String::from)
        .to_vec(),
        env: [
            ("WARDEN_TEST_BROKER".to_string(), broker.to_string()),
            ("PYTHONPATH".to_string(), python_dir().display().to_string()),
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
        ]
        .into(),
        working_dir: Some(python_dir()),
        count,
        node_name: Some("{group}-{index}@local".into()),
    }
}

pub(crate) struct Setup {
    pub(crate) _redis: RedisServer,
    pub(crate) broker: String,
    pub(crate) warden: TestWarden,
    pub(crate) runtime: Arc<dyn Runtime>,
    /// The config warden was started with (to start it again).
    pub(crate) config: warden::config::Config,
    /// Holds the captured worker logs; printed if the test fails.
    _logs: LogDir,
}

pub(crate) async fn start(groups: impl FnOnce(&str) -> Vec<GroupSpec>) -> Setup {
    start_with(groups, |_| {}).await
}

/// As [`start`], with the config changed by `tweak` first.
pub(crate) async fn start_with(
    groups: impl FnOnce(&str) -> Vec<GroupSpec>,
    tweak: impl FnOnce(&mut warden::config::Config),
) -> Setup {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let logs = LogDir::new("local runtime");
    let mut config = test_config(&broker);
    config.local = Some(LocalSettings {
        groups: groups(&broker),
        log_dir: logs.path().to_path_buf(),
        stop_grace: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(200),
        sample_interval: Duration::from_secs(1),
        ..Default::default()
    });
    tweak(&mut config);
    let warden = TestWarden::start(config.clone()).await;
    let runtime = warden.inner().runtime.clone().expect("local runtime on");
    Setup {
        _redis: redis,
        broker,
        warden,
        runtime,
        config,
        _logs: logs,
    }
}

fn key(id: &str) -> WorkerKey {
    WorkerKey::new(warden::fleet::Backend::Celery, "default", id)
}

fn alive(w: &pb::Worker) -> bool {
    w.lifecycle == pb::Lifecycle::Alive as i32
}

/// Waits until ListWorkers shows `id` alive with process id `pid`.
pub(crate) async fn seen_alive_with_pid(setup: &Setup, id: &str, pid: u32) {
    let client = setup.warden.client().await;
    eventually(
        Duration::from_secs(60),
        &format!("{id} alive with pid {pid}"),
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, true).await;
                find(&r, id)
                    .is_some_and(|w| alive(w) && w.pid == Some(pid))
                    .then_some(())
            }
        },
    )
    .await;
}

pub(crate) async fn running_pid(runtime: &dyn Runtime, id: &str) -> u32 {
    eventually(
        Duration::from_secs(30),
        &format!("{id} running"),
        || async { runtime.instance(&key(id)).await.unwrap().pid },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_launched_workers_are_all_seen_alive() {
    let setup = start(|b| vec![celery_group("many", 30, b, "many")]).await;
    let client = setup.warden.client().await;
    let ids: Vec<String> = (0..30).map(|i| format!("many-{i}@local")).collect();
    eventually(Duration::from_secs(240), "30 workers alive", || {
        let mut client = client.clone();
        let ids = ids.clone();
        async move {
            let r = list(&mut client, false).await;
            ids.iter()
                .all(|id| find(&r, id).is_some_and(alive))
                .then_some(())
        }
    })
    .await;
    for id in &ids {
        let info = setup.runtime.instance(&key(id)).await.unwrap();
        assert!(info.running, "{id} runs");
        assert_eq!(info.restarts, 0, "{id} was not respawned");
    }
    setup.warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_is_recorded_and_respawned_and_a_restart_brings_it_back() {
    let setup = start(|b| vec![celery_group("crash", 1, b, "crash")]).await;
    let id = "crash-0@local";
    let first = running_pid(setup.runtime.as_ref(), id).await;
    seen_alive_with_pid(&setup, id, first).await;

    // A follower of its log hears of the crash and of the new process.
    let mut follow = tail(
        setup.warden.channel().await,
        pb::TailRequest {
            worker: id.into(),
            tail_lines: Some(0),
            follow: true,
            ..Default::default()
        },
    )
    .await;

    // A crash: SIGKILL from outside.
    let status = tokio::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let respawned = eventually(Duration::from_secs(30), "respawned", || async {
        let info = setup.runtime.instance(&key(id)).await.unwrap();
        info.pid.filter(|p| *p != first).map(|p| (p, info))
    })
    .await;
    let (second, info) = respawned;
    let exit = info.last_exit.expect("the exit is recorded");
    assert_eq!(exit.status, ExitStatus::Signal(9));
    assert!(!exit.requested, "warden did not ask for it");
    assert_eq!(info.restarts, 1);
    seen_alive_with_pid(&setup, id, second).await;
    let mut kinds = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = follow.next().await {
            if let Some(pb::tail_response::Payload::Event(e)) = message.expect("follow").payload {
                if e.kind == pb::StreamEventKind::Heartbeat as i32 {
                    continue;
                }
                let changed = e.kind == pb::StreamEventKind::InstanceChanged as i32;
                kinds.push((e.kind, e.source));
                if changed {
                    return;
                }
            }
        }
    })
    .await
    .expect("an INSTANCE_CHANGED event");
    assert_eq!(
        kinds,
        [
            (
                pb::StreamEventKind::WaitingForInstance as i32,
                format!("pid:{first}")
            ),
            (
                pb::StreamEventKind::InstanceChanged as i32,
                format!("pid:{second}")
            ),
        ]
    );

    // A restart through the runtime: SIGTERM (warm shutdown), a new process, seen again.
    setup
        .runtime
        .restart(&key(id), RestartMode::Instance, Duration::from_secs(10))
        .await
        .unwrap();
    let info = setup.runtime.instance(&key(id)).await.unwrap();
    let third = info.pid.expect("running after the restart");
    assert_ne!(third, second);
    let exit = info.last_exit.unwrap();
    assert!(exit.requested);
    assert_eq!(exit.status, ExitStatus::Code(0), "a warm shutdown exits 0");
    seen_alive_with_pid(&setup, id, third).await;
    setup.warden.stop().await;
}

async fn tail(channel: Channel, req: pb::TailRequest) -> tonic::Streaming<pb::TailResponse> {
    LogsClient::new(channel)
        .tail(req)
        .await
        .expect("Tail")
        .into_inner()
}

pub(crate) async fn tail_lines(channel: Channel, req: pb::TailRequest) -> Vec<pb::LogLine> {
    let mut stream = tail(channel, req).await;
    let mut lines = Vec::new();
    while let Some(message) = stream.next().await {
        if let Some(pb::tail_response::Payload::Lines(batch)) = message.expect("Tail").payload {
            lines.extend(batch.lines);
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_filters_one_workers_error_lines_and_follows_new_ones() {
    let setup = start(|b| {
        vec![
            celery_group("la", 1, b, "queue-a"),
            celery_group("lb", 1, b, "queue-b"),
        ]
    })
    .await;
    let (a, b) = ("la-0@local", "lb-0@local");
    let pid_a = running_pid(setup.runtime.as_ref(), a).await;
    let pid_b = running_pid(setup.runtime.as_ref(), b).await;
    seen_alive_with_pid(&setup, a, pid_a).await;
    seen_alive_with_pid(&setup, b, pid_b).await;
    let channel = setup.warden.channel().await;

    // Both fail a task; A also succeeds one (INFO lines).
    submit(
        &setup.broker,
        "fail",
        1,
        &["failure-of-a"],
        &["--queue", "queue-a"],
    )
    .await;
    submit(
        &setup.broker,
        "add",
        1,
        &["1", "2"],
        &["--queue", "queue-a"],
    )
    .await;
    submit(
        &setup.broker,
        "fail",
        1,
        &["failure-of-b"],
        &["--queue", "queue-b"],
    )
    .await;

    let errors = |worker: &str| pb::TailRequest {
        worker: worker.into(),
        min_level: pb::LogLevel::Error as i32,
        ..Default::default()
    };
    let all_a = eventually(Duration::from_secs(30), "A's task lines", || {
        let channel = channel.clone();
        async move {
            let lines = tail_lines(
                channel,
                pb::TailRequest {
                    worker: a.into(),
                    ..Default::default()
                },
            )
            .await;
            (lines.iter().any(|l| l.text.contains("failure-of-a"))
                && lines.iter().any(|l| l.text.contains("succeeded")))
            .then_some(lines)
        }
    })
    .await;
    assert!(
        all_a.iter().any(|l| l.level == pb::LogLevel::Info as i32),
        "A's log has INFO lines (the filter has something to drop)"
    );
    let a_errors = tail_lines(channel.clone(), errors(a)).await;
    assert!(
        a_errors.iter().any(|l| l.text.contains("failure-of-a")),
        "A's failure is among its ERROR lines: {a_errors:#?}"
    );
    let a_name = warden::fleet::WorkerKey::resource_name(&key(a));
    for line in &a_errors {
        assert_eq!(line.level, pb::LogLevel::Error as i32, "{line:?}");
        assert_eq!(line.worker, a_name);
        assert_eq!(line.source, format!("pid:{pid_a}"));
        assert!(!line.text.contains("failure-of-b"), "{line:?}");
    }
    // The failure line carries its task id.
    assert!(
        a_errors
            .iter()
            .any(|l| l.text.contains("raised") && !l.task_id.is_empty())
    );

    // Follow: only new lines (tail 0), ERROR and up; a failure after the call began arrives.
    let mut follow = tail(
        channel.clone(),
        pb::TailRequest {
            tail_lines: Some(0),
            follow: true,
            ..errors(a)
        },
    )
    .await;
    submit(
        &setup.broker,
        "fail",
        1,
        &["later-failure"],
        &["--queue", "queue-a"],
    )
    .await;
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = follow.next().await {
            let message = message.expect("follow");
            assert!(!message.cursor.is_empty());
            if let Some(pb::tail_response::Payload::Lines(batch)) = message.payload {
                for line in batch.lines {
                    assert_eq!(line.level, pb::LogLevel::Error as i32, "{line:?}");
                    assert!(
                        !line.text.contains("failure-of-a"),
                        "tail 0 sends no old line"
                    );
                    if line.text.contains("later-failure") {
                        return line;
                    }
                }
            }
        }
        panic!("the follow stream ended");
    })
    .await
    .expect("the new ERROR line is streamed");
    assert_eq!(got.worker, a_name);
    setup.warden.stop().await;
}

fn field_of(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations[0].field.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_refuses_bad_requests_by_field_and_says_when_there_is_no_runtime() {
    // No runtime configured: FAILED_PRECONDITION, NO_RUNTIME.
    let redis = RedisServer::start().await;
    let plain = TestWarden::start(test_config(&redis.url(0))).await;
    let err = LogsClient::new(plain.channel().await)
        .tail(pb::TailRequest {
            worker: "w@h".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    {
        use tonic_types::StatusExt as _;
        assert_eq!(
            err.get_error_details().error_info().unwrap().reason,
            "NO_RUNTIME"
        );
    }
    plain.stop().await;

    // A process that is not (yet) a Celery worker the fleet knows: resolved through the runtime.
    let setup = start(|_| {
        vec![GroupSpec {
            name: "idle".into(),
            command: "sh".into(),
            args: vec!["-c".into(), "echo ready; exec sleep 1000".into()],
            env: Default::default(),
            working_dir: None,
            count: 1,
            node_name: Some("idle-{index}@local".into()),
        }]
    })
    .await;
    let channel = setup.warden.channel().await;
    let lines = eventually(Duration::from_secs(10), "the ready line", || {
        let channel = channel.clone();
        async move {
            let lines = tail_lines(
                channel,
                pb::TailRequest {
                    worker: "idle-0@local".into(),
                    ..Default::default()
                },
            )
            .await;
            (!lines.is_empty()).then_some(lines)
        }
    })
    .await;
    assert_eq!(lines[0].text, "ready");
    assert_eq!(lines[0].level, pb::LogLevel::Unspecified as i32);

    let call = |req: pb::TailRequest| {
        let channel = channel.clone();
        async move { LogsClient::new(channel).tail(req).await.unwrap_err() }
    };
    let base = || pb::TailRequest {
        worker: "idle-0@local".into(),
        ..Default::default()
    };
    let err = call(pb::TailRequest {
        worker: "nobody@nowhere".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(err.code(), tonic::Code::NotFound);
    for (req, field) in [
        (
            pb::TailRequest {
                worker: String::new(),
                ..base()
            },
            "worker",
        ),
        (
            pb::TailRequest {
                container: "main".into(),
                ..base()
            },
            "container",
        ),
        (
            pb::TailRequest {
                cursor: "bogus".into(),
                ..base()
            },
            "cursor",
        ),
        (
            pb::TailRequest {
                regex: "(".into(),
                ..base()
            },
            "regex",
        ),
        (
            pb::TailRequest {
                min_level: 42,
                ..base()
            },
            "min_level",
        ),
    ] {
        let err = call(req).await;
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(field_of(&err), field);
    }

    // A cursor resumes without repeating: nothing new after the last line.
    let mut stream = tail(channel.clone(), base()).await;
    let first = stream.next().await.unwrap().unwrap();
    let resumed = tail_lines(
        channel.clone(),
        pb::TailRequest {
            cursor: first.cursor,
            ..base()
        },
    )
    .await;
    assert!(resumed.is_empty(), "{resumed:?}");
    setup.warden.stop().await;
}
