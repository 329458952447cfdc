//! The Control service against real Celery workers: pause and resume consuming (tasks wait in
//! the queue, then run), dry runs change nothing, a repeated request id acts once, a viewer is
//! refused and the refusal is audited (and kept across a restart in SQLite), conflicting calls on one worker (one runs, the other is
//! ABORTED naming the holder), a drain that outlives its RPC streamed to the end through
//! WatchOperation, and an audit trail that survives a restart in SQLite.
use std::time::Duration;

use crate::support::*;
use tokio_stream::StreamExt as _;
use tonic::{Code, Request, transport::Channel};
use warden::{
    config::{Role, Secret, Token},
    proto::v1::{self as pb, control_client::ControlClient},
};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";

fn as_<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn tokens() -> Vec<Token> {
    [
        ("ci-viewer", Role::Viewer, VIEWER),
        ("ci-operator", Role::Operator, OPERATOR),
    ]
    .into_iter()
    .map(|(name, role, secret)| Token {
        name: name.into(),
        role,
        secret: Secret::new(secret),
    })
    .collect()
}

fn workers(names: &[&str]) -> Option<pb::Selector> {
    Some(pb::Selector {
        workers: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    })
}

/// The worker once it is ALIVE and inspected (its queues known: an event can make it ALIVE
/// before the first inspect round has answered, and control verbs need its queues).
async fn alive(warden: &TestWarden, name: &'static str) -> pb::Worker {
    let client = warden.client().await;
    eventually(Duration::from_secs(40), "the worker is ALIVE", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            find(&r, name)
                .filter(|w| w.lifecycle() == pb::Lifecycle::Alive && !w.queues.is_empty())
                .cloned()
        }
    })
    .await
}

async fn llen(redis: &RedisServer, queue: &str) -> u64 {
    redis.cli(&["LLEN", queue]).await.parse().unwrap()
}

async fn audit(
    control: &mut ControlClient<Channel>,
    filter: pb::ListAuditRequest,
) -> pb::ListAuditResponse {
    control
        .list_audit(as_(OPERATOR, filter))
        .await
        .expect("ListAudit")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_tasks_in_the_queue_and_resume_releases_them() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _worker = CeleryWorker::start(
        &broker,
        "w1@ctl",
        WorkerOptions {
            queues: &["celery", "ctl"],
            concurrency: 1,
            ..WorkerOptions::default()
        },
    );
    let warden = TestWarden::start(test_config(&broker)).await;
    let mut control = ControlClient::new(warden.channel().await);
    let worker = alive(&warden, "w1@ctl").await;
    let pause = |dry_run: bool, request_id: &str| pb::PauseConsumingRequest {
        selector: workers(&["w1@ctl"]),
        reason: "maintenance of ctl".into(),
        dry_run,
        request_id: request_id.into(),
        queues: vec!["ctl".into()],
        ..Default::default()
    };

    // A dry run says what would happen and changes nothing.
    let dry = control
        .pause_consuming(as_(OPERATOR, pause(true, "")))
        .await
        .expect("dry run")
        .into_inner();
    assert!(dry.dry_run);
    assert_eq!(dry.outcomes.len(), 1);
    assert_eq!(
        dry.outcomes[0].code(),
        pb::OutcomeCode::WouldApply,
        "{dry:?}"
    );
    assert_eq!(dry.outcomes[0].worker, worker.name);

    // The real pause applies (it would be SKIPPED had the dry run paused the queue).
    let paused = control
        .pause_consuming(as_(OPERATOR, pause(false, "pause-1")))
        .await
        .expect("pause")
        .into_inner();
    assert_eq!(
        paused.outcomes[0].code(),
        pb::OutcomeCode::Applied,
        "{paused:?}"
    );
    // The same request id again: not acted on (a second pause would be SKIPPED), the first
    // answer comes back.
    let replay = control
        .pause_consuming(as_(OPERATOR, pause(false, "pause-1")))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay, paused);
    // The same id for another request is refused.
    let err = control
        .pause_consuming(as_(OPERATOR, pause(true, "pause-1")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let acted = audit(
        &mut control,
        pb::ListAuditRequest {
            request_id: "pause-1".into(),
            outcome: "OK".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(acted.entries.len(), 1, "replays are not recorded again");
    assert_eq!(acted.entries[0].id, paused.audit_id);
    assert_eq!(acted.entries[0].targets, vec![worker.name.clone()]);
    assert_eq!(acted.entries[0].actor, "anonymous");
    assert!(
        !acted.durable,
        "no store: the trail is in memory and says so"
    );

    // Paused: tasks for `ctl` wait in the queue while the worker keeps taking `celery` tasks.
    submit(&broker, "add", 3, &["1", "2"], &["--queue", "ctl"]).await;
    submit(&broker, "add", 3, &["1", "2"], &[]).await;
    let mut client = warden.client().await;
    let base = worker.processed_tasks;
    eventually(Duration::from_secs(30), "the celery tasks ran", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, true).await;
            find(&r, "w1@ctl")
                .is_some_and(|w| w.processed_tasks >= base + 3)
                .then_some(())
        }
    })
    .await;
    // Two more inspect round trips with the worker: its consumer loop has cycled since.
    list(&mut client, true).await;
    list(&mut client, true).await;
    assert_eq!(llen(&redis, "celery").await, 0);
    assert_eq!(
        llen(&redis, "ctl").await,
        3,
        "a paused queue is not consumed"
    );

    // Resume (no queues: those warden paused): the waiting tasks run.
    let resumed = control
        .resume_consuming(as_(
            OPERATOR,
            pb::ResumeConsumingRequest {
                selector: workers(&["w1@ctl"]),
                ..Default::default()
            },
        ))
        .await
        .expect("resume")
        .into_inner();
    assert_eq!(
        resumed.outcomes[0].code(),
        pb::OutcomeCode::Applied,
        "{resumed:?}"
    );
    assert!(resumed.outcomes[0].message.contains("ctl"), "{resumed:?}");
    eventually(Duration::from_secs(30), "the ctl queue drained", || {
        let redis = &redis;
        async move { (llen(redis, "ctl").await == 0).then_some(()) }
    })
    .await;
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_outlives_its_rpc_holds_the_lock_and_streams_to_the_end() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _worker = CeleryWorker::start(
        &broker,
        "w1@drain",
        WorkerOptions {
            concurrency: 1,
            ..WorkerOptions::default()
        },
    );
    let warden = TestWarden::start(test_config(&broker)).await;
    let mut control = ControlClient::new(warden.channel().await);
    let worker = alive(&warden, "w1@drain").await;

    // A task that runs for 12 s: the drain waits for it.
    submit(&broker, "sleep_for", 1, &["12"], &[]).await;
    let client = warden.client().await;
    eventually(Duration::from_secs(20), "the task is running", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, true).await;
            find(&r, "w1@drain")
                .is_some_and(|w| w.active_tasks == 1)
                .then_some(())
        }
    })
    .await;

    // The drain returns at once, well inside a 3 s client deadline, as an operation.
    let mut drain = Request::new(pb::DrainWorkersRequest {
        selector: workers(&["w1@drain"]),
        reason: "deploy".into(),
        request_id: "drain-1".into(),
        mode: pb::RestartMode::Pool.into(),
        timeout: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    });
    drain.set_timeout(Duration::from_secs(3));
    let op = control
        .drain_workers(drain)
        .await
        .expect("drain")
        .into_inner()
        .operation
        .unwrap();
    assert!(
        matches!(
            op.state(),
            pb::OperationState::Pending | pb::OperationState::Running
        ),
        "{op:?}"
    );
    assert_eq!(op.total, 1);

    // A conflicting call on the same worker waits for the lock, then is ABORTED naming the
    // drain's request id: nothing is done.
    let err = control
        .pause_consuming(pb::PauseConsumingRequest {
            selector: workers(&["w1@drain"]),
            request_id: "pause-during-drain".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("drain-1"), "{err:?}");

    // The operation is found by its request id, and its watch streams progress to the end.
    let listed = control
        .list_operations(pb::ListOperationsRequest {
            request_id: "drain-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.operations.len(), 1);
    assert_eq!(listed.operations[0].name, op.name);
    let mut stream = control
        .watch_operation(pb::WatchOperationRequest {
            name: op.name.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    let last = tokio::time::timeout(Duration::from_secs(90), async {
        let mut last = None;
        while let Some(message) = stream.next().await {
            let op = message.expect("stream ok").operation.unwrap();
            seen.push(op.targets[0].message.clone());
            last = Some(op);
        }
        last
    })
    .await
    .expect("the watch ends")
    .expect("at least one message");
    assert_eq!(last.state(), pb::OperationState::Succeeded, "{last:?}");
    assert_eq!(last.targets[0].code(), pb::OutcomeCode::Applied, "{last:?}");
    assert!(last.targets[0].message.starts_with("BACK"), "{last:?}");
    assert!(last.end_time.is_some() && last.done == 1);
    assert!(
        seen.iter()
            .any(|m| m.contains("waiting for 1 running task")),
        "the drain waited for the running task: {seen:?}"
    );

    // Nothing was lost: the long task finished, and the worker consumes again after the
    // pool restart.
    submit(&broker, "add", 2, &["1", "2"], &[]).await;
    eventually(Duration::from_secs(30), "the worker took new tasks", || {
        let mut client = client.clone();
        let redis = &redis;
        let base = worker.processed_tasks;
        async move {
            let r = list(&mut client, true).await;
            let done = find(&r, "w1@drain").is_some_and(|w| w.processed_tasks >= base + 3);
            (done && llen(redis, "celery").await == 0).then_some(())
        }
    })
    .await;
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_survives_a_restart_in_sqlite() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("warden.db").display());
    let config = || {
        let mut config = test_config(&redis.url(0));
        config.database_url = Secret::new(&url);
        config.tokens = tokens();
        config
    };
    let warden = TestWarden::start(config()).await;
    let mut control = ControlClient::new(warden.channel().await);
    // A refused call and a failed one (an unknown worker): both recorded.
    let cordon = pb::CordonWorkersRequest {
        selector: workers(&["ghost@nowhere"]),
        reason: "kept across restarts".into(),
        request_id: "cordon-1".into(),
        ..Default::default()
    };
    let err = control
        .cordon_workers(as_(VIEWER, cordon.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = control
        .cordon_workers(as_(OPERATOR, cordon))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let before = audit(&mut control, pb::ListAuditRequest::default()).await;
    assert_eq!(before.entries.len(), 2, "{before:?}");
    assert!(before.durable);
    warden.stop().await;

    let warden = TestWarden::start(config()).await;
    let mut control = ControlClient::new(warden.channel().await);
    let after = audit(&mut control, pb::ListAuditRequest::default()).await;
    assert_eq!(after.entries, before.entries);
    let codes: Vec<&str> = after
        .entries
        .iter()
        .map(|e| e.outcome.as_ref().unwrap().code.as_str())
        .collect();
    assert_eq!(codes, ["NOT_FOUND", "PERMISSION_DENIED"], "newest first");
    let by_actor = audit(
        &mut control,
        pb::ListAuditRequest {
            actor: "ci-viewer".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_actor.entries.len(), 1);
    let denied = &by_actor.entries[0];
    assert_eq!(denied.reason, "kept across restarts");
    assert_eq!(
        (denied.action.as_str(), denied.allowed, denied.role()),
        ("CordonWorkers", false, pb::Role::Viewer)
    );
    assert_eq!(denied.request_id, "cordon-1");
    warden.stop().await;
}

async fn cli(server: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.env_remove("WARDEN_TOKEN")
        .args(args)
        .args(["--server", server]);
    run(&mut cmd).await
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_cordons_restarts_a_pool_reads_the_trail_and_shuts_down() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _worker = CeleryWorker::start(
        &broker,
        "w1@cli",
        WorkerOptions {
            concurrency: 1,
            ..WorkerOptions::default()
        },
    );
    // History in SQLite: the restart is put into it (the journal) and counted.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&broker);
    config.database_url = warden::config::Secret::new(format!(
        "sqlite://{}",
        dir.path().join("warden.db").display()
    ));
    let warden = TestWarden::start(config).await;
    let server = warden.grpc_url.clone();
    alive(&warden, "w1@cli").await;

    // Cordon it; cordoning again is SKIPPED.
    let (ok, out, err) = cli(
        &server,
        &[
            "cordon",
            "w1@cli",
            "--reason",
            "flaky disk",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(json(&out)["outcomes"][0]["code"], "APPLIED", "{out}");
    let (ok, out, err) = cli(
        &server,
        &["cordon", "w1@cli", "--dry-run", "--output", "json"],
    )
    .await;
    assert!(ok, "{err}");
    let skipped = json(&out);
    assert_eq!(skipped["outcomes"][0]["code"], "SKIPPED", "{out}");
    assert!(
        skipped["outcomes"][0]["message"]
            .as_str()
            .unwrap()
            .contains("flaky disk")
    );

    // A selector leaves the cordoned worker alone (a dry run says so); naming it acts.
    let (ok, out, err) = cli(
        &server,
        &[
            "restart",
            "--all",
            "--mode",
            "pool",
            "--dry-run",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let preview = json(&out);
    assert_eq!(preview["state"], "SUCCEEDED", "{out}");
    assert_eq!(preview["targets"][0]["code"], "CORDONED", "{out}");
    let (ok, out, err) = cli(
        &server,
        &[
            "restart",
            "w1@cli",
            "--mode",
            "pool",
            "--wait",
            "--request-id",
            "cli-restart-1",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(ok, "the pool restart succeeds: {out} {err}");
    let done = json(out.lines().last().unwrap());
    assert_eq!(done["state"], "SUCCEEDED", "{out}");
    assert!(
        done["targets"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("BACK"),
        "{out}"
    );

    // The restart is in history: a control event for the worker, counted by the summary.
    let mut history = warden::proto::v1::history_client::HistoryClient::new(warden.channel().await);
    eventually(Duration::from_secs(20), "the restart in history", || {
        let mut history = history.clone();
        async move {
            let totals = history
                .get_fleet_history_summary(pb::GetFleetHistorySummaryRequest::default())
                .await
                .ok()?
                .into_inner()
                .summary?
                .totals?;
            assert!(totals.restarts <= 1, "{totals:?}");
            (totals.restarts == 1 && totals.automatic_restarts == 0).then_some(())
        }
    })
    .await;
    let events = history
        .list_events(pb::ListEventsRequest {
            kinds: vec![pb::EventKind::Control.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.message.starts_with("restart (Pool) of w1@cli: BACK")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.message.starts_with("CordonWorkers by ")),
        "{events:?}"
    );

    // A mode that needs a runtime, without one: refused, nothing done.
    let (ok, _, err) = cli(&server, &["restart", "w1@cli", "--mode", "pod"]).await;
    assert!(
        !ok && err.contains("FAILED_PRECONDITION") && err.contains("runtime"),
        "{err}"
    );

    // The operation and the trail.
    let (ok, out, err) = cli(
        &server,
        &[
            "ops",
            "list",
            "--request-id",
            "cli-restart-1",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(json(&out).as_array().unwrap().len(), 1, "{out}");
    let (ok, out, err) = cli(&server, &["audit", "--output", "json"]).await;
    assert!(ok, "{err}");
    let trail = json(&out);
    let actions: Vec<(&str, &str)> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("RestartWorkers", "FAILED_PRECONDITION"),
            ("RestartWorkers", "OK"),
            ("RestartWorkers", "OK"),
            ("CordonWorkers", "OK"),
            ("CordonWorkers", "OK"),
        ],
        "{out}"
    );
    // With a store, the trail is durable (no "kept in memory" warning).
    let (ok, out, _) = cli(&server, &["audit"]).await;
    assert!(ok && !out.contains("kept in memory"), "{out}");

    // A warm shutdown: the operation ends when warden sees the worker go OFFLINE.
    let (ok, out, err) = cli(
        &server,
        &["shutdown", "w1@cli", "--wait", "--output", "json"],
    )
    .await;
    assert!(ok, "{out} {err}");
    let done = json(out.lines().last().unwrap());
    assert_eq!(done["targets"][0]["code"], "APPLIED", "{out}");
    let mut client = warden.client().await;
    let r = list(&mut client, false).await;
    assert_eq!(
        find(&r, "w1@cli").unwrap().lifecycle(),
        pb::Lifecycle::Offline
    );
    warden.stop().await;
}
