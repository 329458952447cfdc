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

/// Whether a reason says that the broker refused the connection (what `BrokerError`
/// reports for a port nobody listens on), as opposed to the initial "not connected yet".
fn refused(reason: &str) -> bool {
    reason.starts_with("broker unreachable: ") && reason.to_lowercase().contains("refused")
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
    let client = warden.client().await;

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
    // Stale, and why: the connection was refused. That is the probe's finding, not the
    // initial state (before the first probe the broker is merely "not connected yet").
    let r = eventually(
        Duration::from_secs(10),
        "the broker reported as refusing connections",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, true).await;
                broker_source(&r)
                    .is_some_and(|s| refused(&s.reason))
                    .then_some(r)
            }
        },
    )
    .await;
    // The reason was there only because probes had run and failed as "unreachable".
    assert!(warden.metrics().broker_probe_count("unreachable") >= 1);
    assert_eq!(warden.metrics().broker_probe_count("ok"), 0);
    let source = broker_source(&r).unwrap();
    eprintln!("while down: {source:?}");
    assert!(!source.available, "{source:?}");
    assert!(source.last_ok.is_none(), "never answered: {source:?}");
    let freshness = r.freshness.as_ref().unwrap();
    assert!(
        freshness.stale,
        "data is marked stale while the broker is down"
    );
    assert!(
        freshness
            .reason
            .contains(&format!("broker: {}", source.reason)),
        "{freshness:?}"
    );

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
            let source = broker_source(&r)?;
            let up = source.available && source.reason.is_empty() && source.last_ok.is_some();
            (fresh && up && find(&r, "late@outage").is_some()).then_some(())
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
    let r = list(&mut client, false).await;
    let source = broker_source(&r).expect("probed");
    assert!(source.available && source.reason.is_empty(), "{source:?}");
    assert_eq!(warden.metrics().broker_probe_count("unreachable"), 0);

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
    // Why: the probes that failed after the kill find the broker unreachable (the dropped
    // connection first, then refused reconnections).
    let r = eventually(
        Duration::from_secs(10),
        "the broker reported as refusing connections",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, true).await;
                broker_source(&r)
                    .is_some_and(|s| refused(&s.reason))
                    .then_some(r)
            }
        },
    )
    .await;
    assert!(warden.metrics().broker_probe_count("unreachable") >= 1);
    let source = broker_source(&r).unwrap();
    eprintln!("while down: {source:?}");
    assert!(!source.available, "{source:?}");
    assert!(source.last_ok.is_some(), "it did answer before: {source:?}");
    let freshness = r.freshness.as_ref().unwrap();
    assert!(
        freshness.stale
            && freshness
                .reason
                .contains(&format!("broker: {}", source.reason)),
        "{freshness:?}"
    );
    let w = find(&r, "steady@outage").expect("the worker is still listed");
    assert!(w.stale, "the worker's data is marked stale");
    assert_eq!(w.stale_sources, ["broker"], "{w:?}");
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
