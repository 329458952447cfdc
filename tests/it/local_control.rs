//! Control over the local runtime, with real Celery workers warden launched: a POD-mode
//! restart replaces exactly that worker's process and reports it BACK; a drain-then-restart
//! while long tasks run lets every task finish (none lost) and restarts the process.
use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use warden::proto::v1::{self as pb, control_client::ControlClient};

use crate::{
    local_runtime::{celery_group, running_pid, seen_alive_with_pid, start, tail_lines},
    support::{eventually, find, list, submit},
};

fn workers(names: &[&str]) -> Option<pb::Selector> {
    Some(pb::Selector {
        workers: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    })
}

/// Follows an operation to its end; returns the last state and every target message seen.
async fn finish(channel: Channel, op: pb::Operation) -> (pb::Operation, Vec<String>) {
    let mut stream = ControlClient::new(channel)
        .watch_operation(pb::WatchOperationRequest { name: op.name })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    let last = tokio::time::timeout(Duration::from_secs(120), async {
        let mut last = None;
        while let Some(message) = stream.next().await {
            let op = message.expect("stream ok").operation.unwrap();
            seen.extend(op.targets.iter().map(|t| t.message.clone()));
            last = Some(op);
        }
        last
    })
    .await
    .expect("the operation ends")
    .expect("at least one message");
    (last, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_restart_and_drain_then_restart_through_the_local_runtime() {
    let setup = start(|b| {
        // A prefork pool of one process: the worker answers remote control while its task
        // runs (a solo pool would not until the task ends).
        let mut ctl = celery_group("ctl", 1, b, "celery");
        let solo = ctl.args.iter().position(|a| a == "solo").expect("-P solo");
        ctl.args[solo] = "prefork".into();
        ctl.args.extend(["-c".into(), "1".into()]);
        vec![ctl, celery_group("other", 1, b, "other")]
    })
    .await;
    let (id, other) = ("ctl-0@local", "other-0@local");
    let first = running_pid(setup.runtime.as_ref(), id).await;
    let other_pid = running_pid(setup.runtime.as_ref(), other).await;
    seen_alive_with_pid(&setup, id, first).await;
    let channel = setup.warden.channel().await;
    let mut control = ControlClient::new(channel.clone());

    // Resource figures from the local runtime's /proc (no Prometheus configured): the
    // worker's process tree's memory, and a CPU figure, with their source.
    let client = setup.warden.client().await;
    let usage = eventually(Duration::from_secs(30), "resource figures", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            find(&r, id)?
                .resources
                .clone()
                .filter(|u| u.cpu_percent.is_some() && u.memory_rss_bytes.is_some())
        }
    })
    .await;
    assert_eq!(usage.source, "runtime", "{usage:?}");
    let rss = usage.memory_rss_bytes.unwrap();
    // A Celery worker with one pool process: tens of MB, not 0 and not absurd.
    assert!((10_000_000..2_000_000_000).contains(&rss), "{usage:?}");

    // No mode: the precise restart (this worker's process), BACK with a new pid.
    let op = control
        .restart_workers(pb::RestartWorkersRequest {
            selector: workers(&[id]),
            reason: "test".into(),
            ..Default::default()
        })
        .await
        .expect("restart")
        .into_inner()
        .operation
        .unwrap();
    let (done, _) = finish(channel.clone(), op).await;
    assert_eq!(done.state(), pb::OperationState::Succeeded, "{done:?}");
    assert_eq!(done.targets[0].code(), pb::OutcomeCode::Applied, "{done:?}");
    assert!(done.targets[0].message.starts_with("BACK"), "{done:?}");
    let second = running_pid(setup.runtime.as_ref(), id).await;
    assert_ne!(second, first, "a new process");
    seen_alive_with_pid(&setup, id, second).await;
    // Exactly that worker: the other process is untouched.
    assert_eq!(running_pid(setup.runtime.as_ref(), other).await, other_pid);

    // Three 3-second tasks for the solo worker; drain while the first runs.
    submit(&setup.broker, "sleep_for", 3, &["3"], &[]).await;
    let client = setup.warden.client().await;
    eventually(Duration::from_secs(30), "a task is running", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, true).await;
            find(&r, id)
                .is_some_and(|w| w.active_tasks >= 1)
                .then_some(())
        }
    })
    .await;
    let op = control
        .drain_workers(pb::DrainWorkersRequest {
            selector: workers(&[id]),
            reason: "deploy".into(),
            mode: pb::RestartMode::Pod.into(),
            timeout: Some(prost_types::Duration {
                seconds: 90,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("drain")
        .into_inner()
        .operation
        .unwrap();
    let (done, seen) = finish(channel.clone(), op).await;
    assert_eq!(done.state(), pb::OperationState::Succeeded, "{done:?}");
    assert!(done.targets[0].message.starts_with("BACK"), "{done:?}");
    assert!(
        seen.iter().any(|m| m.contains("running task")),
        "the drain waited for running tasks: {seen:?}"
    );
    let third = running_pid(setup.runtime.as_ref(), id).await;
    assert_ne!(third, second, "the drain restarted the process");

    // None lost: every task finished, before the restart or after it, as the worker's own
    // log says (the local runtime keeps the slot's output across its processes).
    let succeeded = eventually(Duration::from_secs(60), "three tasks succeeded", || {
        let channel = channel.clone();
        async move {
            let lines = tail_lines(
                channel,
                pb::TailRequest {
                    worker: id.into(),
                    tail_lines: Some(1000),
                    contains: "succeeded".into(),
                    ..Default::default()
                },
            )
            .await;
            let n = lines
                .iter()
                .filter(|l| l.text.contains("sleep_for") && l.text.contains("succeeded"))
                .count();
            assert!(n <= 3, "a task ran twice: {lines:?}");
            (n == 3).then_some(n)
        }
    })
    .await;
    assert_eq!(succeeded, 3);

    // ScaleGroup and LaunchWorkers on a launch group: a dry run changes nothing; scaling to 2
    // ends when 2 are alive; launching 1 more makes 3; scaling to 1 stops two.
    let alive_in_other = || {
        let client = client.clone();
        async move {
            let mut client = client.clone();
            let r = list(&mut client, false).await;
            r.workers
                .iter()
                .filter(|w| {
                    w.name.contains("/other-") && w.lifecycle == pb::Lifecycle::Alive as i32
                })
                .count()
        }
    };
    let scale = |replicas: u32, dry_run: bool| pb::ScaleGroupRequest {
        group: "other".into(),
        replicas,
        dry_run,
        ..Default::default()
    };
    let preview = control
        .scale_group(scale(2, true))
        .await
        .expect("dry run")
        .into_inner()
        .operation
        .unwrap();
    assert_eq!(
        preview.targets[0].code(),
        pb::OutcomeCode::WouldApply,
        "{preview:?}"
    );
    assert!(
        preview.targets[0].message.contains("from 1 alive to 2"),
        "{preview:?}"
    );
    assert_eq!(alive_in_other().await, 1, "a dry run changes nothing");
    for (request, expected) in [
        (Request::Scale(scale(2, false)), 2usize),
        (
            Request::Launch(pb::LaunchWorkersRequest {
                group: "other".into(),
                count: 1,
                ..Default::default()
            }),
            3,
        ),
        (Request::Scale(scale(1, false)), 1),
    ] {
        let op = match request {
            Request::Scale(r) => {
                control
                    .scale_group(r)
                    .await
                    .expect("scale")
                    .into_inner()
                    .operation
            }
            Request::Launch(r) => {
                control
                    .launch_workers(r)
                    .await
                    .expect("launch")
                    .into_inner()
                    .operation
            }
        }
        .unwrap();
        let (done, _) = finish(channel.clone(), op).await;
        assert_eq!(done.state(), pb::OperationState::Succeeded, "{done:?}");
        assert!(
            done.targets[0]
                .message
                .starts_with(&format!("BACK: {expected} alive")),
            "{done:?}"
        );
        eventually(Duration::from_secs(30), "the fleet agrees", || async {
            (alive_in_other().await == expected).then_some(())
        })
        .await;
    }
    // The CLI verb, as a dry run: what launching two more would do.
    let (ok, out, err) = crate::support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_warden")).args([
            "launch",
            "other",
            "-n",
            "2",
            "--dry-run",
            "--output",
            "json",
            "--server",
            &setup.warden.grpc_url,
        ]),
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("WOULD_APPLY") && out.contains("from 1 alive to 3"),
        "{out}"
    );
    assert_eq!(alive_in_other().await, 1, "a dry run changes nothing");
    setup.warden.stop().await;
}

enum Request {
    Scale(pb::ScaleGroupRequest),
    Launch(pb::LaunchWorkersRequest),
}
