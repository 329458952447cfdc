//! Decoding that cannot be abused, on the pidbox reply side: anyone who can write to the
//! broker can read warden's broadcast (reply queue and tickets included) and push forged
//! replies into its reply queue. Each forgery is counted and skipped; none invents a worker,
//! none is deserialized as anything but JSON, none stops the real worker's replies.

use std::{path::Path, process::Command, time::Duration};

use crate::support::*;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use warden::celery::envelope;

/// A pickle that runs `touch <marker>` when unpickled (protocol 0: `os.system(...)`).
fn touching_pickle(marker: &Path) -> Vec<u8> {
    let marker = marker.to_str().expect("a UTF-8 temp path");
    assert!(!marker.contains(['\'', '\\', '\n']), "{marker}");
    format!("cos\nsystem\n(S'touch {marker}'\ntR.").into_bytes()
}

/// Forged replies for one round, each with the reason warden must give for skipping it. The
/// pickled one creates `marker` if anything unpickles it.
fn forgeries(ticket: &str, marker: &Path) -> Vec<(Vec<u8>, &'static str)> {
    let headers = json!({"ticket": ticket, "clock": 1});
    let reply = |body: &Value| {
        envelope::encode(body, headers.clone(), "reply.celery.pidbox", "", 1).into_bytes()
    };
    let pickle = BASE64.encode(touching_pickle(marker));
    let pickled = json!({
        "body": pickle,
        "content-type": "application/x-python-serialize",
        "content-encoding": "binary",
        "headers": headers,
        "properties": {"body_encoding": "base64"},
    })
    .to_string()
    .into_bytes();
    let many_nodes: serde_json::Map<String, Value> = (0..5_000)
        .map(|i| (format!("ghost{i}@forged"), json!({"ok": "pong"})))
        .collect();
    let deep = format!("{}1{}", "[".repeat(50_000), "]".repeat(50_000));
    let deep = json!({"body": BASE64.encode(deep), "headers": headers})
        .to_string()
        .into_bytes();
    vec![
        (pickled, "content_type"),
        (reply(&Value::Object(many_nodes)), "reply_node_count"),
        (
            reply(&json!({"ghost@forged\n": {"ok": "pong"}})),
            "reply_node_name",
        ),
        (reply(&json!(["not", "an", "object"])), "reply_not_object"),
        (
            envelope::encode(
                &json!({"ghost@stale": {"ok": "pong"}}),
                json!({"ticket": "not-this-round"}),
                "",
                "",
                1,
            )
            .into_bytes(),
            "stale_ticket",
        ),
        (deep, "body"),
        (b"{not json".to_vec(), "envelope"),
        (
            format!(
                r#"{{"body":"{}"}}"#,
                "A".repeat(envelope::MAX_ENVELOPE_BYTES)
            )
            .into_bytes(),
            "too_large",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replies_are_counted_and_skipped() {
    // The pickle's marker lives in this test's own directory: nothing else creates it, and
    // no earlier run left it behind.
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("unpickled");
    // The payload is live: Python's pickle, given it, does run the command (here on a
    // control path). So if warden ever unpickled the forged reply, the marker would exist.
    let control = scratch.path().join("control");
    let (ok, _, stderr) = run(Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import base64, pickle, sys; pickle.loads(base64.b64decode(sys.argv[1]))",
        ])
        .arg(BASE64.encode(touching_pickle(&control))))
    .await;
    assert!(ok, "{stderr}");
    assert!(
        control.exists(),
        "the control pickle did not run its command"
    );

    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _worker = CeleryWorker::start(
        &broker,
        "real@hostile",
        WorkerOptions {
            concurrency: 1,
            ..WorkerOptions::default()
        },
    );

    // The attacker listens to the broadcast channel before warden's first round.
    let attacker = redis::Client::open(broker.as_str()).unwrap();
    let mut pubsub = attacker.get_async_pubsub().await.unwrap();
    pubsub.subscribe("/0.celery.pidbox").await.unwrap();
    let mut conn = attacker
        .get_multiplexed_async_connection()
        .await
        .expect("attacker connects");

    let mut config = test_config(&broker);
    config.inspect_timeout = Duration::from_secs(2);
    config.inspect_interval = Duration::from_secs(3);
    let warden = TestWarden::start(config).await;
    let mut client = warden.client().await;

    // Read a broadcast that expects replies; answer it with forgeries, fast.
    let mut messages = pubsub.on_message();
    let (reply_id, ticket) = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let message = messages.next().await.expect("pubsub stream");
            let payload: Vec<u8> = message.get_payload().unwrap();
            let body = envelope::decode(&payload).expect("warden's broadcast").body;
            if let (Some(reply_id), Some(ticket)) = (
                body["reply_to"]["routing_key"].as_str(),
                body["ticket"].as_str(),
            ) {
                break (reply_id.to_string(), ticket.to_string());
            }
        }
    })
    .await
    .expect("warden broadcasts an inspect round");
    let reply_queue = format!("{reply_id}.reply.celery.pidbox");
    let forged = forgeries(&ticket, &marker);
    let metrics = warden.metrics().clone();
    assert_eq!(
        metrics.rejected_count("pidbox_reply", "content_type"),
        0,
        "nothing refused before the forgeries"
    );
    for (payload, _) in &forged {
        redis::cmd("LPUSH")
            .arg(&reply_queue)
            .arg(payload.as_slice())
            .query_async::<i64>(&mut conn)
            .await
            .unwrap();
    }

    eventually(
        Duration::from_secs(10),
        "every forgery counted and skipped",
        || {
            let metrics = metrics.clone();
            let reasons: Vec<&'static str> = forged.iter().map(|(_, r)| *r).collect();
            async move {
                reasons
                    .iter()
                    .all(|r| metrics.rejected_count("pidbox_reply", r) >= 1)
                    .then_some(())
            }
        },
    )
    .await;

    // Only the real worker is known, and it keeps answering.
    eventually(Duration::from_secs(20), "the real worker listed", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, true).await;
            find(&r, "real@hostile").and(r.workers.iter().all(|w| w.pool.is_some()).then_some(()))
        }
    })
    .await;
    let r = list(&mut client, true).await;
    let names: Vec<&str> = r.workers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(names, ["real@hostile"], "a forgery invented a worker");
    // The pickled reply was seen and refused for its content type, once (it was pushed
    // once), without being read: the marker was never created.
    assert_eq!(metrics.rejected_count("pidbox_reply", "content_type"), 1);
    assert!(
        !marker.exists(),
        "the forged pickle was unpickled: {} exists",
        marker.display()
    );
    let (code, body) = {
        let response = reqwest::get(format!("{}/readyz", warden.http_url))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    warden.stop().await;
}
