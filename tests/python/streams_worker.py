"""A Redis Streams worker for the tests: consumes a stream through a consumer group
(XREADGROUP, the group created with MKSTREAM), acknowledges what it reads (unless --no-ack),
heartbeats per warden's protocol and writes the shutdown marker on SIGTERM. An acking worker
reads its own pending entries (XREADGROUP ... 0) before new ones, and records each entry it
processes in the list processed:{stream}:{group} (before acking it).

Heartbeat: SET worker:heartbeat:{stream}:{consumer} <json> EX 3*period, every period.
Shutdown marker: SET worker:shutdown:{stream}:{consumer} <json> EX 120, then the heartbeat is
deleted, on a clean exit.

Task counters (the protocol's optional fields): `processed` (entries finished, failures
included), `failed` (entries whose field `fail` is set: counted as failed, then acked) and
`latency`, a histogram of each entry's processing time (--work seconds of sleep).
"""
import argparse
import json
import os
import signal
import socket
import sys
import time

import redis


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--consumer", required=True)
    p.add_argument("--period", type=float, default=1.0)
    p.add_argument("--capacity", type=int, default=4)
    p.add_argument("--no-ack", action="store_true")
    p.add_argument("--heartbeat-prefix", default="worker:heartbeat:")
    p.add_argument("--shutdown-prefix", default="worker:shutdown:")
    p.add_argument("--work", type=float, default=0.0, help="seconds of work per entry")
    a = p.parse_args()

    r = redis.Redis.from_url(a.redis)
    try:
        r.xgroup_create(a.stream, a.group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    beat_key = f"{a.heartbeat_prefix}{a.stream}:{a.consumer}"
    mark_key = f"{a.shutdown_prefix}{a.stream}:{a.consumer}"
    started = time.time()
    stopping = []
    # Cumulative counters since start, as the heartbeat protocol defines them.
    buckets = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
    counts = [0] * len(buckets)
    totals = {"processed": 0, "failed": 0, "sum": 0.0}
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    def beat():
        value = {
            "started_at": started,
            "last_seen": time.time(),
            "capacity": a.capacity,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "version": "test-1",
            "period": a.period,
            "processed": totals["processed"],
            "failed": totals["failed"],
            "latency": {
                "buckets": buckets,
                "counts": counts,
                "sum": totals["sum"],
                "count": totals["processed"],
            },
        }
        r.set(beat_key, json.dumps(value), px=int(a.period * 3000))

    r.delete(mark_key)
    beat()
    last_beat = time.time()
    print(f"ready {a.consumer}", flush=True)
    processed_key = f"processed:{a.stream}:{a.group}"
    while not stopping:
        block = max(1, int(a.period * 250))
        replies = []
        if not a.no_ack:
            # Our own pending entries first (claimed to us by ReclaimPending, or left by a crash
            # of ours), as warden's protocol asks; then new ones.
            replies = r.xreadgroup(a.group, a.consumer, {a.stream: "0"}, count=a.capacity)
            if not any(entries for _s, entries in replies or []):
                replies = []
        if not replies:
            replies = r.xreadgroup(a.group, a.consumer, {a.stream: ">"}, count=a.capacity, block=block)
        for _stream, entries in replies or []:
            for entry_id, fields in entries:
                if not a.no_ack:
                    t0 = time.monotonic()
                    if a.work > 0:
                        time.sleep(a.work)
                    took = time.monotonic() - t0
                    totals["processed"] += 1
                    totals["failed"] += 1 if b"fail" in (fields or {}) else 0
                    totals["sum"] += took
                    for i, le in enumerate(buckets):
                        if took <= le:
                            counts[i] += 1
                            break
                    # Recorded before the ack, so that a test can count each processing.
                    r.rpush(processed_key, entry_id)
                    r.xack(a.stream, a.group, entry_id)
        if time.time() - last_beat >= a.period:
            beat()
            last_beat = time.time()
    r.set(mark_key, json.dumps({"stopped_at": time.time()}), ex=120)
    r.delete(beat_key)
    print(f"stopped {a.consumer}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
