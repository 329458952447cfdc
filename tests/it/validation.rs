//! Request validation over gRPC: every bad input is INVALID_ARGUMENT naming its field (in the
//! message and in a `BadRequest` field violation), and keyset paging walks real workers in
//! the stable order of `order_by`.

use std::{collections::BTreeMap, time::Duration};

use crate::support::*;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;
use warden::proto::v1::{self as pb, worker_health_client::WorkerHealthClient};

/// The code, the field in the message, and the field path in the BadRequest detail.
#[track_caller]
fn assert_invalid(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "message does not name {field:?}: {:?}",
        status.message()
    );
    let details = status.get_error_details();
    let bad_request = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest detail in {status:?}"));
    assert_eq!(
        bad_request.field_violations[0].field, field,
        "{bad_request:?}"
    );
    assert!(!bad_request.field_violations[0].description.is_empty());
}

/// A warden on a broker with no workers: validation does not need any.
async fn empty_fleet() -> (RedisServer, TestWarden, WorkerHealthClient<Channel>) {
    let redis = RedisServer::start().await;
    let warden = TestWarden::start(test_config(&redis.url(0))).await;
    let client = warden.client().await;
    (redis, warden, client)
}

async fn list_err(client: &mut WorkerHealthClient<Channel>, req: pb::ListWorkersRequest) -> Status {
    match client.list_workers(req).await {
        Ok(r) => panic!("accepted: {:?}", r.into_inner()),
        Err(status) => status,
    }
}

fn glob(pattern: &str) -> Option<pb::WorkerFilter> {
    Some(pb::WorkerFilter {
        name_glob: pattern.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_name_glob_is_invalid_filter_name_glob() {
    let (_redis, warden, mut client) = empty_fleet().await;
    for pattern in ["w[", "w{a,b", "[z-a]"] {
        let status = list_err(
            &mut client,
            pb::ListWorkersRequest {
                filter: glob(pattern),
                ..Default::default()
            },
        )
        .await;
        assert_invalid(&status, "filter.name_glob");
    }
    // The same filter is validated wherever it appears.
    let status = client
        .get_fleet_summary(pb::GetFleetSummaryRequest { filter: glob("w[") })
        .await
        .unwrap_err();
    assert_invalid(&status, "filter.name_glob");
    // A well-formed glob is accepted.
    client
        .list_workers(pb::ListWorkersRequest {
            filter: glob("w[0-9]*@{a,b}"),
            ..Default::default()
        })
        .await
        .expect("a valid glob is accepted");
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_above_the_maximum_is_lowered_to_it() {
    // AIP-158: a page size above 1000 is lowered, not refused. 1,200 workers (fed to the
    // fleet directly: the broker is not needed) make the lowering visible.
    let nobody = reserve_port();
    let mut config = test_config(&format!("redis://127.0.0.1:{nobody}/0"));
    config.broker_timeout = Duration::from_millis(200);
    let warden = TestWarden::start(config).await;
    let fleet = warden.warden.as_ref().unwrap().fleet.clone();
    fleet
        .observe(warden::fleet::owner::FleetMessage::Inspect(
            warden::fleet::InspectRound {
                backend: warden::fleet::Backend::Celery,
                scope: "default".into(),
                started_at: std::time::SystemTime::now(),
                targets: Some(Vec::new()),
                reports: (0..1200)
                    .map(|i| warden::fleet::InspectReport {
                        name: format!("w{i:04}@lowered"),
                        ping: true,
                        ..Default::default()
                    })
                    .collect(),
            },
        ))
        .await
        .unwrap();
    fleet.barrier().await.unwrap();
    let mut client = warden.client().await;
    for size in [1001, u32::MAX] {
        let page = client
            .list_workers(pb::ListWorkersRequest {
                page_size: size,
                ..Default::default()
            })
            .await
            .expect("an oversized page_size is lowered, not refused")
            .into_inner();
        assert_eq!(page.workers.len(), 1000, "page_size {size}");
        assert_eq!(page.total_size, 1200);
        assert!(!page.next_page_token.is_empty());
    }
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_page_token_is_invalid_page_token() {
    let (_redis, warden, mut client) = empty_fleet().await;
    // Not base64; base64 of non-JSON; JSON that is not a token; a token missing its cursor.
    for token in [
        "garbage!",
        "garbage",
        "bm90IGpzb24",
        "eyJ2IjoxfQ",
        "eyJ2IjoxLCJmcCI6MX0",
    ] {
        let status = list_err(
            &mut client,
            pb::ListWorkersRequest {
                page_token: token.into(),
                ..Default::default()
            },
        )
        .await;
        assert_invalid(&status, "page_token");
    }
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_order_by_is_invalid_order_by() {
    let (_redis, warden, mut client) = empty_fleet().await;
    for order_by in [99, -1] {
        let status = list_err(
            &mut client,
            pb::ListWorkersRequest {
                order_by,
                ..Default::default()
            },
        )
        .await;
        assert_invalid(&status, "order_by");
    }
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_activity_is_invalid_filter_activities() {
    let (_redis, warden, mut client) = empty_fleet().await;
    let status = list_err(
        &mut client,
        pb::ListWorkersRequest {
            filter: Some(pb::WorkerFilter {
                activities: vec![42],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_invalid(&status, "filter.activities");
    // UNSPECIFIED is not a value one can filter on either; a known value next to it does not
    // excuse it.
    let status = list_err(
        &mut client,
        pb::ListWorkersRequest {
            filter: Some(pb::WorkerFilter {
                activities: vec![pb::Activity::Idle.into(), 0],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_invalid(&status, "filter.activities");
    // The other enum filters name their own fields.
    for (filter, field) in [
        (
            pb::WorkerFilter {
                lifecycles: vec![42],
                ..Default::default()
            },
            "filter.lifecycles",
        ),
        (
            pb::WorkerFilter {
                health: vec![42],
                ..Default::default()
            },
            "filter.health",
        ),
        (
            pb::WorkerFilter {
                backends: vec![42],
                ..Default::default()
            },
            "filter.backends",
        ),
    ] {
        let status = list_err(
            &mut client,
            pb::ListWorkersRequest {
                filter: Some(filter),
                ..Default::default()
            },
        )
        .await;
        assert_invalid(&status, field);
    }
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_worker_without_a_name_is_invalid_name() {
    let (_redis, warden, mut client) = empty_fleet().await;
    for refresh in [false, true] {
        let status = client
            .get_worker(pb::GetWorkerRequest {
                name: String::new(),
                refresh,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&status, "name");
    }
    warden.stop().await;
}

/// Starts `names` as real workers (one process each), each also consuming a queue named
/// after itself, and waits until warden lists all of them.
async fn fleet_of(
    redis: &RedisServer,
    names: &[&'static str],
) -> (Vec<CeleryWorker>, TestWarden, WorkerHealthClient<Channel>) {
    let broker = redis.url(0);
    let workers: Vec<CeleryWorker> = names
        .iter()
        .map(|name| {
            let queue = queue_of(name);
            CeleryWorker::start(
                &broker,
                name,
                WorkerOptions {
                    queues: &["celery", &queue],
                    concurrency: 1,
                    ..WorkerOptions::default()
                },
            )
        })
        .collect();
    let warden = TestWarden::start(test_config(&broker)).await;
    let client = warden.client().await;
    eventually(Duration::from_secs(40), "every worker listed", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            names
                .iter()
                .all(|n| find(&r, n).is_some_and(|w| w.pool.is_some()))
                .then_some(())
        }
    })
    .await;
    (workers, warden, client)
}

fn queue_of(worker: &str) -> String {
    format!("q-{}", worker.split('@').next().unwrap_or(worker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_page_token_from_another_filter_or_order_is_invalid_page_token() {
    let redis = RedisServer::start().await;
    let (_workers, warden, mut client) =
        fleet_of(&redis, &["sa@validation", "sb@validation"]).await;
    let first = |filter: Option<pb::WorkerFilter>, order: pb::WorkerOrder| pb::ListWorkersRequest {
        filter,
        page_size: 1,
        order_by: order.into(),
        ..Default::default()
    };
    let page = client
        .list_workers(first(glob("s*"), pb::WorkerOrder::Name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.workers.len(), 1);
    let token = page.next_page_token;
    assert!(!token.is_empty(), "two workers, one per page: a next page");

    // The token works for the listing it was issued for...
    let next = client
        .list_workers(pb::ListWorkersRequest {
            page_token: token.clone(),
            ..first(glob("s*"), pb::WorkerOrder::Name)
        })
        .await
        .expect("the token is valid for its own listing")
        .into_inner();
    assert_eq!(next.workers[0].id, "sb@validation");

    // ...and nowhere else: another filter, no filter, another order.
    for other in [
        first(glob("sa*"), pb::WorkerOrder::Name),
        first(None, pb::WorkerOrder::Name),
        first(glob("s*"), pb::WorkerOrder::ProcessedTasks),
        first(glob("s*"), pb::WorkerOrder::Unspecified),
    ] {
        let status = list_err(
            &mut client,
            pb::ListWorkersRequest {
                page_token: token.clone(),
                ..other
            },
        )
        .await;
        assert_invalid(&status, "page_token");
        assert!(status.message().contains("different"), "{status:?}");
    }
    warden.stop().await;
}

/// Walks a listing one worker per page and returns the names in order.
async fn walk(client: &mut WorkerHealthClient<Channel>, order: pb::WorkerOrder) -> Vec<String> {
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_workers(pb::ListWorkersRequest {
                filter: glob("p*@validation"),
                page_size: 1,
                page_token: token,
                order_by: order.into(),
                ..Default::default()
            })
            .await
            .expect("a page")
            .into_inner();
        assert!(page.workers.len() <= 1, "page_size 1: {page:?}");
        assert_eq!(page.total_size, 3, "total_size counts every page");
        names.extend(page.workers.into_iter().map(|w| w.id));
        assert!(names.len() <= 3, "more pages than workers: {names:?}");
        if page.next_page_token.is_empty() {
            return names;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_pages_walk_every_worker_once_in_order() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let names = ["pa@validation", "pb@validation", "pc@validation"];
    let (_workers, warden, mut client) = fleet_of(&redis, &names).await;

    // Processed counts that order the workers differently from their names.
    let counts: BTreeMap<&str, u64> = [(names[0], 1), (names[1], 3), (names[2], 2)].into();
    for (name, count) in &counts {
        submit(
            &broker,
            "add",
            *count as u32,
            &["1", "2"],
            &["--queue", &queue_of(name)],
        )
        .await;
    }
    eventually(Duration::from_secs(30), "processed counts settle", || {
        let mut client = client.clone();
        let counts = counts.clone();
        async move {
            let r = list(&mut client, true).await;
            counts
                .iter()
                .all(|(n, c)| find(&r, n).is_some_and(|w| w.processed_tasks == *c))
                .then_some(())
        }
    })
    .await;

    let by_name = walk(&mut client, pb::WorkerOrder::Name).await;
    assert_eq!(by_name, names, "name order, each once");
    let by_processed = walk(&mut client, pb::WorkerOrder::ProcessedTasks).await;
    assert_eq!(
        by_processed,
        ["pb@validation", "pc@validation", "pa@validation"],
        "most processed first, each once"
    );
    // The walk is stable: the same order again.
    assert_eq!(
        walk(&mut client, pb::WorkerOrder::ProcessedTasks).await,
        by_processed
    );
    assert_eq!(walk(&mut client, pb::WorkerOrder::Unspecified).await, names);
    warden.stop().await;
}
