//! Readiness follows what the broker answers to a data command: NOT_SERVING (health service
//! and /readyz) while Redis refuses authentication (NOAUTH, WRONGPASS) or is still loading
//! its dataset (LOADING), with the reason in /readyz and the change logged once, not on
//! every probe.

use std::time::Duration;

use crate::support::*;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const PASSWORD: &str = "right-horse-battery-staple";
const WRONG: &str = "wrong-horse-battery-staple";

async fn serving(warden: &TestWarden, service: &str) -> ServingStatus {
    HealthClient::new(warden.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers without the broker")
        .into_inner()
        .status()
}

async fn readyz(warden: &TestWarden) -> (u16, String) {
    let response = reqwest::get(format!("{}/readyz", warden.http_url))
        .await
        .expect("/readyz answers");
    let code = response.status().as_u16();
    (code, response.text().await.unwrap_or_default())
}

/// Waits until the probe has failed with `kind` at least `n` times.
async fn probes_failed(warden: &TestWarden, kind: &'static str, n: u64) {
    eventually(Duration::from_secs(15), "several failed probes", || async {
        (warden.metrics().broker_probe_count(kind) >= n).then_some(())
    })
    .await;
}

/// NOT_SERVING everywhere, with `reason` in /readyz, and logged once although every probe
/// failed.
async fn assert_not_ready(warden: &TestWarden, reason: &str) {
    for service in ["", "warden.v1.WorkerHealth", "warden.v1.Control"] {
        assert_eq!(
            serving(warden, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    let (code, body) = readyz(warden).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(reason), "{body}");
    assert!(
        !body.contains(PASSWORD) && !body.contains(WRONG),
        "a password in /readyz: {body}"
    );
    assert_eq!(warden.metrics().broker_probe_count("ok"), 0);
    assert_eq!(
        warden.metrics().broker_status_change_count(),
        1,
        "one change (unknown -> down) and so one log line, not one per probe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_authentication_is_not_ready_and_the_right_password_is() {
    let redis = RedisServer::start_with_password(PASSWORD).await;
    let good = redis.url(0);
    assert!(good.contains(PASSWORD));
    let _worker = CeleryWorker::start(
        &good,
        "w@readiness",
        WorkerOptions {
            concurrency: 1,
            ..WorkerOptions::default()
        },
    );
    let no_password = format!("redis://127.0.0.1:{}/0", redis.port());
    let wrong_password = format!("redis://:{WRONG}@127.0.0.1:{}/0", redis.port());
    let bare = TestWarden::start(test_config(&no_password)).await;
    let wrong = TestWarden::start(test_config(&wrong_password)).await;
    let right = TestWarden::start(test_config(&good)).await;

    // No password: every command meets NOAUTH.
    probes_failed(&bare, "auth", 4).await;
    assert_not_ready(&bare, "authentication").await;
    assert!(readyz(&bare).await.1.contains("NOAUTH"));

    // A wrong password: AUTH is refused (WRONGPASS).
    probes_failed(&wrong, "auth", 4).await;
    assert_not_ready(&wrong, "authentication").await;
    let body = readyz(&wrong).await.1;
    assert!(body.contains("wrong user or password"), "{body}");

    // Neither sees the worker; both say why their answer is stale.
    for warden in [&bare, &wrong] {
        let r = list(&mut warden.client().await, true).await;
        assert!(r.workers.is_empty(), "{r:?}");
        let freshness = r.freshness.unwrap();
        assert!(
            freshness.stale && freshness.reason.contains("authentication"),
            "{freshness:?}"
        );
    }

    // The right password: SERVING, ready, and the worker (started with the same URL) listed.
    eventually(Duration::from_secs(10), "SERVING", || async {
        (serving(&right, "").await == ServingStatus::Serving).then_some(())
    })
    .await;
    assert_eq!(readyz(&right).await, (200, "ready\n".to_string()));
    eventually(Duration::from_secs(30), "the worker is listed", || async {
        let r = list(&mut right.client().await, false).await;
        find(&r, "w@readiness").map(|_| ())
    })
    .await;
    assert_eq!(right.metrics().broker_probe_count("auth"), 0);
    assert_eq!(right.metrics().broker_status_change_count(), 1);

    // The refused ones stay refused, still without logging again.
    probes_failed(&bare, "auth", 8).await;
    assert_not_ready(&bare, "authentication").await;
    for w in [bare, wrong, right] {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_loading_its_dataset_is_not_ready_until_loaded() {
    // Not a skip: a test that passes without running proves nothing.
    let version = redis_major_version().await;
    assert!(
        version >= 7,
        "redis-server {version}.x is installed; this test needs redis-server >= 7 (its \
         --key-load-delay slows the dataset load down). scripts/test installs Redis 7 from \
         Debian: run it, or install redis-server >= 7 and put it first on PATH"
    );
    // About 8 s of LOADING.
    let redis = RedisServer::start_loading(60_000).await;
    assert!(redis.loading().await);
    let warden = TestWarden::start(test_config(&redis.url(0))).await;
    probes_failed(&warden, "loading", 2).await;
    assert_not_ready(&warden, "loading its dataset").await;
    assert!(
        redis.loading().await,
        "the load ended before the checks; give it more keys"
    );

    eventually(
        Duration::from_secs(60),
        "SERVING once the dataset is loaded",
        || async { (serving(&warden, "").await == ServingStatus::Serving).then_some(()) },
    )
    .await;
    assert!(!redis.loading().await);
    assert_eq!(readyz(&warden).await.0, 200);
    assert_eq!(
        warden.metrics().broker_status_change_count(),
        2,
        "down once, up once"
    );
    warden.stop().await;
}
