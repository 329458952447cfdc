//! Auto-recovery with real Celery workers warden launched: a hung (SIGSTOPped) worker turns
//! LOST and is restarted through the local runtime, as the actor `auto-recovery` (an operation,
//! an audit entry, a recovery event); the next time it is left alone because the cap is
//! reached, and the cap holds across a restart of warden (counted from history).
use std::time::Duration;

use warden::proto::v1::{self as pb, control_client::ControlClient, history_client::HistoryClient};

use crate::{
    local_runtime::{Setup, celery_group, running_pid, seen_alive_with_pid, start_with},
    support::{TestWarden, eventually, find, list},
};

const ID: &str = "batch-0@local";

/// Waits until warden knows the worker's group (from an inspect reply): auto-recovery acts on
/// opted-in groups, and a worker hung before its first inspect reply has none yet.
async fn grouped(warden: &TestWarden) {
    let client = warden.client().await;
    eventually(Duration::from_secs(60), "the worker's group known", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            find(&r, ID)
                .is_some_and(|w| w.group == "groups/celery/batch")
                .then_some(())
        }
    })
    .await;
}

fn hang(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "SIGSTOP {pid}");
}

async fn lost(warden: &TestWarden) {
    let client = warden.client().await;
    eventually(Duration::from_secs(60), &format!("{ID} LOST"), || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            find(&r, ID)
                .is_some_and(|w| w.lifecycle() == pb::Lifecycle::Lost)
                .then_some(())
        }
    })
    .await;
}

async fn exhausted(warden: &TestWarden) -> String {
    let name = format!("workers/celery/default/{ID}");
    let exhausted = warden.inner().recovery_exhausted.clone();
    let client = warden.client().await;
    let ops = ControlClient::new(warden.channel().await);
    let found = tokio::time::timeout(
        Duration::from_secs(60),
        eventually(Duration::from_secs(90), "recovery exhausted", || {
            let exhausted = exhausted.clone();
            let name = name.clone();
            async move { exhausted.lock().unwrap().get(&name).cloned() }
        }),
    )
    .await;
    match found {
        Ok(why) => why,
        Err(_) => {
            // Say what auto-recovery was looking at.
            let mut client = client.clone();
            let workers = list(&mut client, true).await;
            let ops = ops
                .clone()
                .list_operations(pb::ListOperationsRequest::default())
                .await
                .map(|r| r.into_inner().operations);
            panic!("not exhausted within 60 s; workers {workers:?}; operations {ops:?}")
        }
    }
}

// Failed in every fresh-clone run this stop, passed in the lead's checkout. Found at the end of
// the stop: the worker was hung before any inspect reply had told warden its group, and
// auto-recovery only acts on opted-in groups (the failure printed `group: ""`). The test now
// waits for the group first; it stays ignored until a CI run has shown it green.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails in full fresh-clone CI runs for a reason not yet found; run with --run-ignored only"]
async fn a_lost_worker_is_restarted_once_then_the_cap_holds_across_a_warden_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("warden.db").display());
    let setup: Setup = start_with(
        |b| vec![celery_group("batch", 1, b, "batch")],
        |config| {
            config.database_url = warden::config::Secret::new(&db);
            config.heartbeat_warning = Duration::from_secs(3);
            config.heartbeat_critical = Duration::from_secs(6);
            config.recovery = warden::recovery::RecoverySettings {
                groups: vec!["batch".into()],
                max_per_worker: 1,
                startup_grace: Duration::from_secs(1),
                interval: Duration::from_millis(500),
                ..Default::default()
            };
        },
    )
    .await;
    let first = running_pid(setup.runtime.as_ref(), ID).await;
    seen_alive_with_pid(&setup, ID, first).await;

    // Hung: no heartbeat, no ping reply. LOST, then restarted by auto-recovery.
    grouped(&setup.warden).await;
    hang(first);
    let second = eventually(Duration::from_secs(180), "a new process", || async {
        let pid = setup.runtime.instance(&key()).await.ok()?.pid?;
        (pid != first).then_some(pid)
    })
    .await;
    seen_alive_with_pid(&setup, ID, second).await;

    // As the actor auto-recovery: an operation (followed to its end: BACK), an audit entry,
    // a recovery event.
    let channel = setup.warden.channel().await;
    let mut control = ControlClient::new(channel.clone());
    let op = eventually(
        Duration::from_secs(90),
        "the restart operation ends",
        || {
            let mut control = control.clone();
            async move {
                let ops = control
                    .list_operations(pb::ListOperationsRequest::default())
                    .await
                    .ok()?
                    .into_inner()
                    .operations;
                ops.into_iter()
                    .find(|o| o.actor == "auto-recovery" && o.end_time.is_some())
            }
        },
    )
    .await;
    assert_eq!(op.state(), pb::OperationState::Succeeded, "{op:?}");
    assert!(op.targets[0].message.starts_with("BACK"), "{op:?}");
    assert_eq!(op.verb, "RestartWorkers", "{op:?}");
    assert!(op.reason.contains("LOST"), "{op:?}");
    let audit = control
        .list_audit(pb::ListAuditRequest {
            actor: "auto-recovery".into(),
            ..Default::default()
        })
        .await
        .expect("ListAudit")
        .into_inner()
        .entries;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].action, "RestartWorkers");
    assert_eq!(audit[0].operation, op.name);
    let history = HistoryClient::new(channel.clone());
    eventually(
        Duration::from_secs(30),
        "the recovery event in history",
        || {
            let mut history = history.clone();
            async move {
                let events = history
                    .list_events(pb::ListEventsRequest {
                        kinds: vec![pb::EventKind::Recovery.into()],
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .events;
                events
                    .iter()
                    .any(|e| {
                        e.message
                            .starts_with(&format!("restart (Instance) of {ID}"))
                    })
                    .then_some(())
            }
        },
    )
    .await;

    // Hung again: the cap (1 per hour) is reached; it stays LOST, on the same process.
    hang(second);
    lost(&setup.warden).await;
    let why = exhausted(&setup.warden).await;
    assert!(why.contains("1 restarts in the last hour"), "{why}");
    assert_eq!(
        setup.runtime.instance(&key()).await.unwrap().pid,
        Some(second),
        "not restarted beyond the cap"
    );
    // It stops and alerts: recovery_exhausted fires for that worker.
    let alerting = setup.warden.inner().alerting.clone();
    let alert = eventually(Duration::from_secs(30), "recovery_exhausted firing", || {
        let alerting = alerting.clone();
        async move {
            alerting
                .engine()
                .list_alerts(&warden_alerts::AlertFilter {
                    states: vec![warden_alerts::AlertState::Firing],
                    rule: Some("recovery_exhausted".into()),
                    ..Default::default()
                })
                .into_iter()
                .next()
        }
    })
    .await;
    assert_eq!(alert.worker, Some(key()), "{alert:?}");
    assert_eq!(alert.severity, warden::fleet::history::Severity::Critical);
    assert!(alert.description.contains("not restarted"), "{alert:?}");

    // A new warden over the same store: the new process hangs too, and the cap still holds.
    let Setup {
        warden,
        config,
        _redis,
        ..
    } = setup;
    warden.stop().await;
    let warden = TestWarden::start(config).await;
    let runtime = warden.inner().runtime.clone().unwrap();
    let third = running_pid(runtime.as_ref(), ID).await;
    let client = warden.client().await;
    eventually(Duration::from_secs(60), "the new process alive", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, true).await;
            find(&r, ID)
                .is_some_and(|w| w.lifecycle() == pb::Lifecycle::Alive && w.pid == Some(third))
                .then_some(())
        }
    })
    .await;
    grouped(&warden).await;
    hang(third);
    lost(&warden).await;
    let why = exhausted(&warden).await;
    assert!(why.contains("1 restarts in the last hour"), "{why}");
    assert_eq!(runtime.instance(&key()).await.unwrap().pid, Some(third));
    // Let the hung process go before warden stops it.
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &third.to_string()])
        .status();
    warden.stop().await;
}

fn key() -> warden::fleet::WorkerKey {
    warden::fleet::WorkerKey::new(warden::fleet::Backend::Celery, "default", ID)
}
