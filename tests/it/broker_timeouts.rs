//! A broker that hangs (`DEBUG SLEEP` on the test's own Redis) never holds an RPC past its
//! deadline: refreshes answer within broker_timeout + inspect_timeout with the failure in
//! `freshness`, readiness turns NOT_SERVING because the probe times out, and everything
//! recovers when Redis wakes up, without leaking reply bindings.

use std::time::{Duration, Instant};

use crate::support::*;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use warden::proto::v1 as pb;

const BROKER_TIMEOUT: Duration = Duration::from_secs(1);
const INSPECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Scheduling and gRPC overhead on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(750);
const HANG_SECONDS: u32 = 8;

async fn serving(channel: tonic::transport::Channel) -> ServingStatus {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers without the broker")
        .into_inner()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_broker_never_holds_an_rpc_past_its_deadline() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _w = CeleryWorker::start(
        &broker,
        "w@hang",
        WorkerOptions {
            concurrency: 1,
            ..WorkerOptions::default()
        },
    );
    let mut config = test_config(&broker);
    config.broker_timeout = BROKER_TIMEOUT;
    config.inspect_timeout = INSPECT_TIMEOUT;
    config.inspect_interval = Duration::from_secs(2);
    let warden = TestWarden::start(config).await;
    let channel = warden.channel().await;
    let mut client = warden.client().await;
    eventually(Duration::from_secs(30), "worker listed", || {
        let mut client = client.clone();
        async move { find(&list(&mut client, false).await, "w@hang").map(|_| ()) }
    })
    .await;
    assert_eq!(serving(channel.clone()).await, ServingStatus::Serving);

    let bound = BROKER_TIMEOUT + INSPECT_TIMEOUT + MARGIN;
    let hang = redis.hang(HANG_SECONDS);
    let hang_started = Instant::now();
    // Refreshes back to back from the moment the hang begins: the first ones are caught
    // mid-round by it, the later ones find it already hanging.
    let mut answered = 0;
    let mut failures_reported = 0;
    let mut slowest = Duration::ZERO;
    while hang_started.elapsed() < Duration::from_secs(4) {
        let start = Instant::now();
        let r = client
            .list_workers(pb::ListWorkersRequest {
                refresh: true,
                ..Default::default()
            })
            .await
            .expect("ListWorkers answers while the broker hangs")
            .into_inner();
        let elapsed = start.elapsed();
        assert!(
            elapsed <= bound,
            "ListWorkers{{refresh}} took {elapsed:?} > {bound:?}"
        );
        slowest = slowest.max(elapsed);
        assert!(find(&r, "w@hang").is_some(), "the last known state is kept");
        let freshness = r.freshness.expect("freshness");
        failures_reported += usize::from(!freshness.reason.is_empty());

        let start = Instant::now();
        let r = client
            .get_worker(pb::GetWorkerRequest {
                name: "w@hang".into(),
                refresh: true,
                ..Default::default()
            })
            .await
            .expect("GetWorker answers while the broker hangs")
            .into_inner();
        let elapsed = start.elapsed();
        assert!(
            elapsed <= bound,
            "GetWorker{{refresh}} took {elapsed:?} > {bound:?}"
        );
        slowest = slowest.max(elapsed);
        assert_eq!(r.worker.expect("worker").id, "w@hang");
        let freshness = r.freshness.expect("freshness");
        failures_reported += usize::from(!freshness.reason.is_empty());
        answered += 2;
    }
    eprintln!("{answered} refreshes during the hang, slowest {slowest:?} (bound {bound:?})");
    assert!(
        failures_reported > 0,
        "a refresh that could not reach the broker says so in freshness"
    );

    // The probe times out, so the broker counts as not connected: NOT_SERVING, and /readyz
    // says why. (Still inside the hang: at most 4 s of 8 have passed.)
    eventually(
        Duration::from_secs(3),
        "NOT_SERVING while the broker hangs",
        || {
            let channel = channel.clone();
            async move { (serving(channel).await == ServingStatus::NotServing).then_some(()) }
        },
    )
    .await;
    let readyz = reqwest::get(format!("{}/readyz", warden.http_url))
        .await
        .unwrap();
    assert_eq!(readyz.status().as_u16(), 503);
    let body = readyz.text().await.unwrap();
    assert!(body.contains("did not answer within 1s"), "{body}");
    let r = list(&mut client, true).await;
    let freshness = r.freshness.unwrap();
    assert!(freshness.stale && freshness.reason.contains("did not answer"));
    assert!(hang_started.elapsed() < Duration::from_secs(u64::from(HANG_SECONDS)));

    // Redis wakes up: SERVING, fresh answers, and no reply binding left behind by the rounds
    // the stall interrupted.
    assert_eq!(hang.await.unwrap(), "OK");
    eventually(Duration::from_secs(10), "SERVING again", || {
        let channel = channel.clone();
        async move { (serving(channel).await == ServingStatus::Serving).then_some(()) }
    })
    .await;
    eventually(Duration::from_secs(10), "a fresh refresh", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, true).await;
            let f = r.freshness.as_ref()?;
            (!f.stale && f.reason.is_empty() && find(&r, "w@hang").is_some()).then_some(())
        }
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "no leaked reply bindings",
        || async {
            let members = redis
                .cli(&["SCARD", "_kombu.binding.reply.celery.pidbox"])
                .await;
            (members == "0").then_some(())
        },
    )
    .await;
    warden.stop().await;
}
