//! The broker going away: warden starts anyway, reports NOT_SERVING, keeps answering with
//! stale data, and recovers when Redis comes back.

use std::time::Duration;

use crate::support::*;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use warden::proto::v1 as pb;

async fn serving(channel: tonic::transport::Channel) -> ServingStatus {
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: "warden.v1.WorkerHealth".into(),
        })
        .await
        .expect("health check answers")
        .into_inner()
        .status()
}

async fn readyz(http_url: &str) -> u16 {
    reqwest::get(format!("{http_url}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_a_broker_and_recovers_when_it_appears() {
    let mut redis = RedisServer::not_started();
    let broker = redis.url(0);
    let warden = TestWarden::start(test_config(&broker)).await;
    let channel = warden.channel().await;
    let mut client = warden.client().await;

    eventually(
        Duration::from_secs(10),
        "NOT_SERVING without a broker",
        || {
            let channel = channel.clone();
            async move { (serving(channel).await == ServingStatus::NotServing).then_some(()) }
        },
    )
    .await;
    assert_eq!(readyz(&warden.http_url).await, 503);
    assert_eq!(
        reqwest::get(format!("{}/healthz", warden.http_url))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let r = list(&mut client, true).await;
    let freshness = r.freshness.expect("freshness is always set");
    assert!(
        freshness.stale,
        "data is marked stale while the broker is down"
    );
    assert!(!freshness.reason.is_empty());

    redis.restart().await;
    let _w = CeleryWorker::start(&broker, "late@outage", WorkerOptions::default());
    eventually(
        Duration::from_secs(15),
        "SERVING once the broker answers",
        || {
            let channel = channel.clone();
            async move { (serving(channel).await == ServingStatus::Serving).then_some(()) }
        },
    )
    .await;
    assert_eq!(readyz(&warden.http_url).await, 200);
    eventually(Duration::from_secs(30), "the late worker is found", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            let fresh = !r.freshness.as_ref()?.stale;
            (fresh && find(&r, "late@outage").is_some()).then_some(())
        }
    })
    .await;
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_run_keeps_answering_with_stale_data_then_recovers() {
    let mut redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _w = CeleryWorker::start(&broker, "steady@outage", WorkerOptions::default());
    let warden = TestWarden::start(test_config(&broker)).await;
    let channel = warden.channel().await;
    let mut client = warden.client().await;
    eventually(Duration::from_secs(30), "worker listed", || {
        let mut client = client.clone();
        async move { find(&list(&mut client, false).await, "steady@outage").map(|_| ()) }
    })
    .await;
    assert_eq!(serving(channel.clone()).await, ServingStatus::Serving);

    redis.kill().await;
    eventually(
        Duration::from_secs(10),
        "NOT_SERVING after the broker dies",
        || {
            let channel = channel.clone();
            async move { (serving(channel).await == ServingStatus::NotServing).then_some(()) }
        },
    )
    .await;
    let r = list(&mut client, true).await;
    assert!(r.freshness.as_ref().unwrap().stale);
    let w = find(&r, "steady@outage").expect("the worker is still listed");
    assert!(w.stale, "the worker's data is marked stale");
    // Silence caused by the outage is not held against the worker.
    assert_eq!(w.lifecycle(), pb::Lifecycle::Alive);

    redis.restart().await;
    eventually(Duration::from_secs(15), "SERVING again", || {
        let channel = channel.clone();
        async move { (serving(channel).await == ServingStatus::Serving).then_some(()) }
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "fresh data again with the worker answering",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, true).await;
                let w = find(&r, "steady@outage")?;
                (!w.stale && w.activity() != pb::Activity::Unresponsive).then_some(())
            }
        },
    )
    .await;
    warden.stop().await;
}
