//! The Streams verbs of the Control service against a real redis-server and real worker
//! processes: ReclaimPending moves a crashed consumer's entries to a live one, which processes
//! each exactly once (a dry run changes nothing); DiscardPending (admin only) acks and deletes a
//! dead consumer's entries and the emptied consumer, and leaves a live consumer alone;
//! RunJanitor reports (dry run) then trims; bad requests name their field.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use redis::{AsyncCommands as _, Value, aio::MultiplexedConnection};
use tonic::{Code, Request};
use warden::{
    config::{Config, Role, Secret, Token},
    proto::v1::{self as pb, control_client::ControlClient},
};

use crate::support::*;

const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const PERIOD: Duration = Duration::from_millis(300);

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn config(broker: &str) -> Config {
    let mut config = Config {
        streams: vec!["jobs".into()],
        streams_poll_interval: Duration::from_millis(300),
        // Off: the verbs alone act here.
        streams_janitor_interval: Duration::ZERO,
        ..test_config(broker)
    };
    config.tokens = [
        ("ci-operator", Role::Operator, OPERATOR),
        ("ci-admin", Role::Admin, ADMIN),
    ]
    .into_iter()
    .map(|(name, role, secret)| Token {
        name: name.into(),
        role,
        secret: Secret::new(secret),
    })
    .collect();
    config
}

async fn connect(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url(0))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// Pending entries of the group: id -> consumer.
async fn pending(con: &mut MultiplexedConnection) -> BTreeMap<String, String> {
    let list: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("jobs")
        .arg("billing")
        .arg("-")
        .arg("+")
        .arg(10_000)
        .query_async(con)
        .await
        .unwrap();
    list.into_iter().map(|(id, c, _, _)| (id, c)).collect()
}

async fn consumer_names(con: &mut MultiplexedConnection) -> BTreeSet<String> {
    let info: Vec<Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("jobs")
        .arg("billing")
        .query_async(con)
        .await
        .unwrap();
    info.into_iter()
        .map(|c| {
            let f: BTreeMap<String, Value> = redis::from_redis_value(c).unwrap();
            redis::from_redis_value::<String>(f["name"].clone()).unwrap()
        })
        .collect()
}

/// A consumer that read entries without acking them and crashed: its heartbeat has expired.
/// Returns the ids it holds.
async fn crashed_holder(
    broker: &str,
    con: &mut MultiplexedConnection,
    name: &str,
    entries: usize,
) -> BTreeSet<String> {
    let mut holder = StreamsWorker::start(broker, "jobs", "billing", name, PERIOD, true);
    let beat = format!("worker:heartbeat:jobs:{name}");
    eventually(Duration::from_secs(20), "the holder heartbeats", || {
        let mut con = con.clone();
        let beat = beat.clone();
        async move { con.exists::<_, bool>(&beat).await.unwrap().then_some(()) }
    })
    .await;
    for _ in 0..entries {
        let _: String = con.xadd("jobs", "*", &[("f", "v")]).await.unwrap();
    }
    let held = eventually(
        Duration::from_secs(20),
        "the holder holds every entry",
        || {
            let mut con = con.clone();
            let name = name.to_string();
            async move {
                let p = pending(&mut con).await;
                let held: BTreeSet<String> = p
                    .into_iter()
                    .filter(|(_, c)| *c == name)
                    .map(|(id, _)| id)
                    .collect();
                (held.len() == entries).then_some(held)
            }
        },
    )
    .await;
    holder.kill9().await;
    eventually(
        Duration::from_secs(20),
        "the holder's heartbeat expires",
        || {
            let mut con = con.clone();
            let beat = beat.clone();
            async move { (!con.exists::<_, bool>(&beat).await.unwrap()).then_some(()) }
        },
    )
    .await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_moves_a_crashed_consumers_entries_to_a_live_one_which_processes_each_once() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut con = connect(&redis).await;
    let held = crashed_holder(&broker, &mut con, "dead", 12).await;
    let _live = StreamsWorker::start(&broker, "jobs", "billing", "live", PERIOD, false);
    eventually(
        Duration::from_secs(20),
        "the live worker heartbeats",
        || {
            let mut con = con.clone();
            async move {
                con.exists::<_, bool>("worker:heartbeat:jobs:live")
                    .await
                    .unwrap()
                    .then_some(())
            }
        },
    )
    .await;
    let warden = TestWarden::start(config(&broker)).await;
    let mut control = ControlClient::new(warden.channel().await);
    let request = pb::ReclaimPendingRequest {
        stream: "jobs".into(),
        group: "billing".into(),
        min_idle: Some(prost_types::Duration::default()),
        reason: "dead consumer".into(),
        dry_run: true,
        ..Default::default()
    };

    // A dry run names exactly the held entries and moves nothing.
    let preview = control
        .reclaim_pending(authed(request.clone(), OPERATOR))
        .await
        .expect("dry run")
        .into_inner();
    assert!(preview.dry_run);
    assert_eq!(preview.to_consumer, "live");
    let previewed: BTreeSet<String> = preview.entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(previewed, held);
    assert!(
        preview
            .entries
            .iter()
            .all(|e| e.consumer == "dead" && e.delivery_count == 1)
    );
    assert!(!preview.audit_id.is_empty());
    let p = pending(&mut con).await;
    assert!(
        held.iter()
            .all(|id| p.get(id).map(String::as_str) == Some("dead"))
    );

    // The CLI: `warden streams` lists the group with what Redis holds; `warden reclaim
    // --dry-run` names the same entries.
    let url = warden.grpc_url.clone();
    let listed = eventually(
        Duration::from_secs(20),
        "warden streams lists the group",
        || {
            let url = url.clone();
            async move {
                let (ok, stdout, stderr) = run(std::process::Command::new(env!(
                    "CARGO_BIN_EXE_warden"
                ))
                .args([
                    "streams", "--output", "json", "--server", &url, "--token", OPERATOR,
                ]))
                .await;
                assert!(ok, "{stderr}");
                let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
                let group = v
                    .as_array()?
                    .iter()
                    .find(|g| g["queue"] == "jobs:billing")?
                    .clone();
                (group["consumers"].as_array()?.len() == 2).then_some(group)
            }
        },
    )
    .await;
    assert_eq!(listed["pending"], held.len() as u64);
    let dead = listed["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["consumer"] == "dead")
        .expect("the dead consumer is listed");
    assert_eq!(dead["pending"], held.len() as u64);
    let (ok, stdout, stderr) = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_warden")).args([
            "reclaim",
            "jobs",
            "billing",
            "--min-idle",
            "0s",
            "--dry-run",
            "--output",
            "json",
            "--server",
            &url,
            "--token",
            OPERATOR,
        ]),
    )
    .await;
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["to_consumer"], "live");
    let ids: BTreeSet<String> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, held);
    assert_eq!(
        pending(&mut con).await.len(),
        held.len(),
        "the CLI dry run moved nothing"
    );

    // The real call moves them; the live worker processes each exactly once.
    let done = control
        .reclaim_pending(authed(
            pb::ReclaimPendingRequest {
                dry_run: false,
                ..request.clone()
            },
            OPERATOR,
        ))
        .await
        .expect("reclaim")
        .into_inner();
    let moved: BTreeSet<String> = done.entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(moved, held);
    assert!(!done.truncated);
    let processed = eventually(
        Duration::from_secs(20),
        "every reclaimed entry processed and acked",
        || {
            let mut con = con.clone();
            async move {
                let p = pending(&mut con).await;
                let list: Vec<String> = con.lrange("processed:jobs:billing", 0, -1).await.unwrap();
                p.is_empty().then_some(list)
            }
        },
    )
    .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in &processed {
        *counts.entry(id.clone()).or_default() += 1;
    }
    for id in &held {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id} processed once: {processed:?}"
        );
    }

    // Nothing left to move; a request naming a consumer with no heartbeat as the receiver is
    // refused.
    let again = control
        .reclaim_pending(authed(
            pb::ReclaimPendingRequest {
                dry_run: false,
                ..request.clone()
            },
            OPERATOR,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.entries.is_empty());
    let err = control
        .reclaim_pending(authed(
            pb::ReclaimPendingRequest {
                to_consumer: "dead".into(),
                ..request.clone()
            },
            OPERATOR,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Bad requests name their field; unknown groups are NOT_FOUND.
    for (bad, field) in [
        (
            pb::ReclaimPendingRequest {
                stream: String::new(),
                ..request.clone()
            },
            "stream",
        ),
        (
            pb::ReclaimPendingRequest {
                min_idle: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..request.clone()
            },
            "min_idle",
        ),
    ] {
        let err = control
            .reclaim_pending(authed(bad, OPERATOR))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{field}: {err:?}");
    }
    let err = control
        .reclaim_pending(authed(
            pb::ReclaimPendingRequest {
                group: "nope".into(),
                ..request.clone()
            },
            OPERATOR,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_is_admin_only_and_drops_a_dead_consumers_entries_and_the_consumer() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut con = connect(&redis).await;
    let held = crashed_holder(&broker, &mut con, "poisoned", 5).await;
    // A live consumer holding entries too (it never acks): named, it is left alone.
    let _alive = StreamsWorker::start(&broker, "jobs", "billing", "alive", PERIOD, true);
    for _ in 0..3 {
        let _: String = con.xadd("jobs", "*", &[("f", "v")]).await.unwrap();
    }
    let alive_held = eventually(Duration::from_secs(20), "the live one holds its 3", || {
        let mut con = con.clone();
        async move {
            let p = pending(&mut con).await;
            let mine: BTreeSet<String> = p
                .into_iter()
                .filter(|(_, c)| c == "alive")
                .map(|(id, _)| id)
                .collect();
            (mine.len() == 3).then_some(mine)
        }
    })
    .await;
    let warden = TestWarden::start(config(&broker)).await;
    let mut control = ControlClient::new(warden.channel().await);
    let request = pb::DiscardPendingRequest {
        stream: "jobs".into(),
        group: "billing".into(),
        consumers: vec!["poisoned".into(), "alive".into()],
        min_idle: Some(prost_types::Duration::default()),
        reason: "poison".into(),
        dry_run: true,
        ..Default::default()
    };

    let err = control
        .discard_pending(authed(request.clone(), OPERATOR))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "operators may not discard"
    );

    let preview = control
        .discard_pending(authed(request.clone(), ADMIN))
        .await
        .expect("dry run")
        .into_inner();
    let previewed: BTreeSet<String> = preview.entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(previewed, held);
    assert_eq!(preview.deleted_consumers, vec!["poisoned".to_string()]);
    assert_eq!(preview.skipped_consumers, vec!["alive".to_string()]);
    assert_eq!(
        pending(&mut con).await.len(),
        held.len() + 3,
        "a dry run changes nothing"
    );

    let done = control
        .discard_pending(authed(
            pb::DiscardPendingRequest {
                dry_run: false,
                ..request.clone()
            },
            ADMIN,
        ))
        .await
        .expect("discard")
        .into_inner();
    let discarded: BTreeSet<String> = done.entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(discarded, held);
    let p = pending(&mut con).await;
    assert_eq!(
        p.keys().cloned().collect::<BTreeSet<_>>(),
        alive_held,
        "only the live consumer's entries are still pending"
    );
    let ids: Vec<(String, Value)> = con.xrange_all("jobs").await.unwrap();
    let left: BTreeSet<String> = ids.into_iter().map(|(id, _)| id).collect();
    assert!(
        held.is_disjoint(&left),
        "discarded entries are deleted from the stream"
    );
    assert!(alive_held.is_subset(&left));
    let names = consumer_names(&mut con).await;
    assert!(!names.contains("poisoned"), "{names:?}");
    assert!(names.contains("alive"), "{names:?}");

    for (bad, field) in [
        (
            pb::DiscardPendingRequest {
                consumers: Vec::new(),
                ..request.clone()
            },
            "consumers",
        ),
        (
            pb::DiscardPendingRequest {
                entry_ids: vec!["12-x".into()],
                ..request.clone()
            },
            "entry_ids[0]",
        ),
    ] {
        let err = control
            .discard_pending(authed(bad, ADMIN))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{field}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_janitor_reports_in_a_dry_run_then_trims_what_no_group_needs() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut con = connect(&redis).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("jobs")
        .arg("billing")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let id: String = con.xadd("jobs", "*", &[("f", "v")]).await.unwrap();
        ids.push(id);
    }
    // The group reads 6 and acks 4: the 5th is the oldest entry it still needs.
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("billing")
        .arg("c1")
        .arg("COUNT")
        .arg(6)
        .arg("STREAMS")
        .arg("jobs")
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: u64 = con.xack("jobs", "billing", &ids[..4]).await.unwrap();
    let warden = TestWarden::start(config(&broker)).await;
    let mut control = ControlClient::new(warden.channel().await);

    let err = control
        .run_janitor(authed(pb::RunJanitorRequest::default(), OPERATOR))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let preview = control
        .run_janitor(authed(
            pb::RunJanitorRequest {
                dry_run: true,
                consumer_idle: Some(prost_types::Duration::default()),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.trims.len(), 1);
    assert_eq!(preview.trims[0].bound, ids[4]);
    assert_eq!(preview.trims[0].entries, 4);
    assert!(preview.deleted_consumers.is_empty(), "c1 holds entries");
    let len: u64 = con.xlen("jobs").await.unwrap();
    assert_eq!(len, 10, "a dry run trims nothing");

    let done = control
        .run_janitor(authed(pb::RunJanitorRequest::default(), ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.trims[0].entries, 4);
    let left: Vec<(String, Value)> = con.xrange_all("jobs").await.unwrap();
    assert_eq!(
        left.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        ids[4..].to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_verbs_are_not_found_when_streams_are_off() {
    let redis = RedisServer::start().await;
    let warden = TestWarden::start(test_config(&redis.url(0))).await;
    let mut control = ControlClient::new(warden.channel().await);
    let err = control
        .run_janitor(pb::RunJanitorRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("Streams backend is off"), "{err:?}");
}

/// With `streams_auto_reclaim`, a SIGKILLed consumer's pending entries reach a live consumer,
/// which processes each exactly once, without anyone calling ReclaimPending (30 s floor, so
/// this test takes about 40 s); the move is a history event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reclaim_hands_a_crashed_consumers_entries_to_a_live_one() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut con = connect(&redis).await;
    let held = crashed_holder(&broker, &mut con, "dead", 8).await;
    let _live = StreamsWorker::start(&broker, "jobs", "billing", "live", PERIOD, false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        streams_auto_reclaim: true,
        ..config(&broker)
    };
    config.database_url = Secret::new(format!(
        "sqlite://{}",
        dir.path().join("history.db").display()
    ));
    let warden = TestWarden::start(config).await;

    let processed = eventually(
        Duration::from_secs(90),
        "every held entry processed by the live worker",
        || {
            let mut con = con.clone();
            let held = held.clone();
            async move {
                let list: Vec<String> = con.lrange("processed:jobs:billing", 0, -1).await.unwrap();
                let done: BTreeSet<&String> = list.iter().collect();
                held.iter().all(|id| done.contains(id)).then_some(list)
            }
        },
    )
    .await;
    for id in &held {
        assert_eq!(
            processed.iter().filter(|p| *p == id).count(),
            1,
            "{id} processed once: {processed:?}"
        );
    }
    eventually(Duration::from_secs(20), "nothing left pending", || {
        let mut con = con.clone();
        async move { pending(&mut con).await.is_empty().then_some(()) }
    })
    .await;

    let history = pb::history_client::HistoryClient::new(warden.channel().await);
    let event = eventually(Duration::from_secs(20), "the move in history", || {
        let mut history = history.clone();
        async move {
            history
                .list_events(authed(
                    pb::ListEventsRequest {
                        kinds: vec![pb::EventKind::Control.into()],
                        ..Default::default()
                    },
                    OPERATOR,
                ))
                .await
                .expect("ListEvents")
                .into_inner()
                .events
                .into_iter()
                .find(|e| {
                    e.attributes.get("action").and_then(|v| v.value.clone())
                        == Some(pb::attribute_value::Value::StringValue(
                            "auto_reclaim".into(),
                        ))
                })
        }
    })
    .await;
    let string = |name: &str| match event.attributes.get(name).and_then(|v| v.value.clone()) {
        Some(pb::attribute_value::Value::StringValue(s)) => s,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(string("stream"), "jobs");
    assert_eq!(string("group"), "billing");
    assert_eq!(string("from"), "dead");
    assert_eq!(string("to"), "live");
    assert_eq!(
        event
            .attributes
            .get("entries")
            .and_then(|v| v.value.clone()),
        Some(pb::attribute_value::Value::IntValue(held.len() as i64))
    );
}
