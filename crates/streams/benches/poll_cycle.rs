//! One Streams poll cycle at 1,000 consumers over 50 streams (issue 17): wall time per poll and
//! the Redis round trips it takes, against a private redis-server; then one janitor pass.
//!
//! `cargo bench -p warden-streams --bench poll_cycle [-- --noise N]`: N unrelated keys (default
//! 0) show what the keyspace SCANs cost as the Redis the streams share grows. Round trips are
//! counted from Redis's own command statistics: every SCAN call is one, and each of the poll's
//! three pipelines is one.
use std::{
    collections::BTreeMap,
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use redis::aio::MultiplexedConnection;
use warden_streams::{
    StreamsSettings,
    janitor::{self, JanitorSettings},
    poller::{self, DISCOVERY_EVERY, Discovery},
};

const STREAMS: usize = 50;
const CONSUMERS_PER_STREAM: usize = 20;
const ENTRIES_PER_STREAM: usize = 200;
const POLLS: usize = 50;

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn commandstats(con: &mut MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let noise: usize = std::env::args()
        .skip_while(|a| a != "--noise")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let _redis = Redis(child);
    let url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = loop {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The fleet: 50 streams, one group each, 20 consumers each holding 2 pending entries, each
    // with a heartbeat key; plus `noise` unrelated keys.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for s in 0..STREAMS {
        let stream = format!("bench:{s}");
        let mut pipe = redis::pipe();
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("workers")
            .arg("0")
            .arg("MKSTREAM")
            .ignore();
        for _ in 0..ENTRIES_PER_STREAM {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("f")
                .arg("v")
                .ignore();
        }
        for c in 0..CONSUMERS_PER_STREAM {
            let consumer = format!("c{c}");
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg("workers")
                .arg(&consumer)
                .arg("COUNT")
                .arg(2)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .ignore();
            let beat = format!(
                r#"{{"started_at": {now}, "last_seen": {now}, "capacity": 4, "pid": {c}, "period": 5}}"#
            );
            pipe.cmd("SET")
                .arg(format!("worker:heartbeat:{stream}:{consumer}"))
                .arg(beat)
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        let () = pipe.query_async(&mut con).await.unwrap();
    }
    for chunk in (0..noise).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET").arg(format!("noise:{i}")).arg("x").ignore();
        }
        let () = pipe.query_async(&mut con).await.unwrap();
    }

    let settings = StreamsSettings {
        redis_url: url.clone(),
        streams: vec!["bench:*".into()],
        heartbeat_prefix: "worker:heartbeat:".into(),
        shutdown_prefix: "worker:shutdown:".into(),
        poll_interval: Duration::from_secs(3),
        timeout: Duration::from_secs(30),
        janitor: JanitorSettings {
            interval: None,
            consumer_idle: Duration::from_secs(3600),
        },
        auto_reclaim: false,
    };
    let mut poll_con = client.get_multiplexed_async_connection().await.unwrap();
    let mut leased = BTreeMap::new();
    // Warm-up, and a check that the poll sees the whole fleet.
    let first = poller::poll(
        &mut poll_con,
        &settings,
        SystemTime::now(),
        &mut leased,
        &mut Discovery::new(1),
    )
    .await
    .unwrap();
    let consumers: usize = first.round.iter().map(|(_, r)| r.len()).sum();
    assert_eq!(consumers, STREAMS * CONSUMERS_PER_STREAM);
    assert_eq!(first.depths.len(), STREAMS);

    for refresh_every in [1, DISCOVERY_EVERY] {
        let mut discovery = Discovery::new(refresh_every);
        let before = commandstats(&mut con).await;
        let mut times = Vec::with_capacity(POLLS);
        for _ in 0..POLLS {
            let t = Instant::now();
            let p = poller::poll(
                &mut poll_con,
                &settings,
                SystemTime::now(),
                &mut leased,
                &mut discovery,
            )
            .await
            .unwrap();
            times.push(t.elapsed());
            assert_eq!(p.round.len(), STREAMS);
        }
        let after = commandstats(&mut con).await;
        let delta = |name: &str| after.get(name).unwrap_or(&0) - before.get(name).unwrap_or(&0);
        let commands: u64 = after
            .iter()
            .filter(|(k, _)| k.as_str() != "info")
            .map(|(k, v)| v - before.get(k).unwrap_or(&0))
            .sum();
        let scans = delta("scan") as f64 / POLLS as f64;
        times.sort();
        println!(
            "poll cycle: {} streams, {} consumers, {} noise keys, {POLLS} polls, discovery SCANs every {refresh_every} polls",
            STREAMS,
            STREAMS * CONSUMERS_PER_STREAM,
            noise
        );
        println!(
            "  time per poll: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3
        );
        println!(
            "  round trips per poll: {:.1} ({scans:.1} SCAN calls + 3 pipelines); Redis commands per poll: {:.0}",
            scans + 3.0,
            commands as f64 / POLLS as f64
        );
    }

    // One janitor pass (dry run, then real) over the same fleet.
    let before = commandstats(&mut con).await;
    let t = Instant::now();
    let report = janitor::pass(
        &mut poll_con,
        &settings.streams,
        &settings.heartbeat_prefix,
        Duration::ZERO,
        false,
    )
    .await
    .unwrap();
    let took = t.elapsed();
    let after = commandstats(&mut con).await;
    let evals = after.get("eval").unwrap_or(&0) - before.get("eval").unwrap_or(&0);
    println!(
        "janitor pass: {:.2} ms, {} streams trimmed ({} entries), {} EVALs, {} consumers deleted (all hold entries or heartbeats: 0 expected)",
        took.as_secs_f64() * 1e3,
        report.trims.len(),
        report.trims.iter().map(|t| t.entries).sum::<u64>(),
        evals,
        report.deleted.len()
    );
}
