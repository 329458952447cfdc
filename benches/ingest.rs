//! Ingest throughput: decode kombu envelopes from the event stream and apply them to the
//! fleet state, on one core. The mix is what a busy fleet sends: per worker, a heartbeat and
//! a `task.multi` batch of received/started/succeeded (and some failed) events.
use std::{
    hint::black_box,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use warden::{
    celery::{envelope, events},
    fleet::{Thresholds, state::FleetState},
};

/// The allocator the warden binary uses, so that figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKERS: usize = 200;
const TASKS_PER_BATCH: usize = 10;

/// Messages and the number of events they carry.
fn messages() -> (Vec<Vec<u8>>, u64) {
    let t0 = 1_700_000_000.0;
    let mut messages = Vec::new();
    let mut events = 0u64;
    for w in 0..WORKERS {
        let host = format!("worker-{w}@host-{}", w % 17);
        let heartbeat = json!({"hostname": host, "utcoffset": 0, "pid": 1000 + w, "clock": 5,
            "freq": 2.0, "active": 1, "processed": 1234, "loadavg": [0.4, 0.3, 0.2],
            "sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux",
            "timestamp": t0, "type": "worker-heartbeat"});
        messages.push(
            envelope::encode(
                &heartbeat,
                json!({"hostname": host}),
                "celeryev",
                "worker.heartbeat",
                1,
            )
            .into_bytes(),
        );
        events += 1;
        let mut batch = Vec::new();
        for t in 0..TASKS_PER_BATCH {
            let id = format!("{w:08}-0000-4000-8000-{t:012}");
            let name = ["app.tasks.resize", "app.tasks.send_email", "app.tasks.sync"][t % 3];
            batch.push(
                json!({"type": "task-received", "uuid": id, "name": name, "hostname": host,
                "args": "(1, 'a')", "kwargs": "{}", "root_id": id, "parent_id": null,
                "retries": 0, "eta": null, "expires": null, "timestamp": t0, "clock": 1,
                "utcoffset": 0, "pid": 1000 + w}),
            );
            batch.push(json!({"type": "task-started", "uuid": id, "hostname": host,
                "timestamp": t0 + 0.01, "clock": 2, "utcoffset": 0, "pid": 2000 + w}));
            if t % 10 == 9 {
                batch.push(json!({"type": "task-failed", "uuid": id, "hostname": host,
                    "exception": "RuntimeError('x')", "traceback": "Traceback ...",
                    "timestamp": t0 + 0.2, "clock": 3, "utcoffset": 0, "pid": 2000 + w}));
            } else {
                batch.push(
                    json!({"type": "task-succeeded", "uuid": id, "hostname": host,
                    "result": "'ok'", "runtime": 0.05 + (t as f64) * 0.01,
                    "timestamp": t0 + 0.2, "clock": 3, "utcoffset": 0, "pid": 2000 + w}),
                );
            }
            events += 3;
        }
        messages.push(
            envelope::encode(
                &json!(batch),
                json!({"hostname": host}),
                "celeryev",
                "task.multi",
                1,
            )
            .into_bytes(),
        );
    }
    (messages, events)
}

fn ingest(c: &mut Criterion) {
    let (messages, events) = messages();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let thresholds = Thresholds {
        warning: Duration::from_secs(30),
        critical: Duration::from_secs(60),
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let scope: std::sync::Arc<str> = std::sync::Arc::from("default");
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(events));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(events::decode(black_box(m), &scope).unwrap());
            }
        })
    });
    group.bench_function("decode_and_apply", |b| {
        let mut state = FleetState::new(now);
        b.iter(|| {
            for m in &messages {
                let (decoded, _) = events::decode(m, &scope).unwrap();
                for event in decoded {
                    state.apply_event(event, now, thresholds);
                }
            }
            // What the owner does once per batch.
            black_box(state.commit(now).len());
        })
    });
    group.finish();
    eprintln!(
        "ingest mix: {} messages, {events} events, {:.1} KiB, {:.0} bytes/event",
        messages.len(),
        bytes as f64 / 1024.0,
        bytes as f64 / events as f64
    );
    let _ = SystemTime::now();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
