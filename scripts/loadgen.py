#!/usr/bin/env python3
"""Publish Celery events to a Redis broker at a fixed rate, exactly as Celery 5.7 workers do.

Wire format (see the protocol notes and celery/events/dispatcher.py, kombu/transport/redis.py):

* every message is a kombu envelope: the JSON event (or batch) base64-encoded in ``body``,
  ``content-type: application/json``, ``headers = {"hostname": <node>}``,
  ``properties.delivery_info = {"exchange": "celeryev", "routing_key": <key>}``,
  ``delivery_mode: 1``, ``body_encoding: base64``, a fresh ``delivery_tag``;
  serialised with ``json.dumps`` defaults (kombu's separators) and sent with
  ``PUBLISH /{db}.celeryev/<routing_key>``;
* a ``worker-heartbeat`` (single object, routing key ``worker.heartbeat``) from each of W
  synthetic workers every 2 s (celery's default ``freq``), staggered across workers;
* task events as ``task.multi`` batches (a JSON array): per task ``task-received``,
  ``task-started``, then ``task-succeeded`` (or ``task-failed``, ~5 %), with the fields and the
  field order of Celery 5.7 (``Event(type, hostname, utcoffset, pid, clock, **fields)``).
  A worker's dispatcher buffers task events and flushes at ``buffer_limit`` (24) or on the next
  event-loop tick, so real batches hold 1..24 events; ``--batch`` fixes the size (default 10,
  the size benches/ingest.rs uses).

``--rate`` is the total number of events per second, heartbeats included: task events get
``rate - workers / 2`` per second. Task messages go round-robin over the workers; each worker has
its own Lamport clock (shared by its heartbeats and task events, as in Celery), pid and
processed counter.

Every message is encoded before the clock starts (timestamps are the scheduled send times), then
paced with a monotonic clock; whatever is due is sent as one pipeline of raw PUBLISH commands and
every reply (the number of subscribers that received it) is read. At the end it prints how many
events of each type were published, how many of them reached no subscriber, and the achieved
rate. ``--procs P`` splits the workers (and the rate) over P processes and sums their counts.

Needs redis-py only (``pip install redis``).
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import random
import sys
import time
import uuid
from collections import Counter

import redis

HEARTBEAT_FREQ = 2.0
CELERY_VERSION = "5.7.0"

# (task name, weight, args repr factory, kwargs repr factory, result repr factory, runtime median s)
TASKS = [
    ("app.tasks.images.resize", 30,
     lambda r: f"('s3://media-prod/uploads/{r.randrange(10**9):09d}.jpg', 800, 600)",
     lambda r: "{'quality': 85, 'format': 'webp'}",
     lambda r: f"{{'key': 'thumbs/{r.randrange(10**9):09d}.webp', 'bytes': {r.randrange(10**4, 10**6)}}}",
     0.12),
    ("app.tasks.email.send_welcome", 25,
     lambda r: f"({r.randrange(10**7)},)",
     lambda r: "{'locale': 'en_US', 'template': 'welcome_v3'}",
     lambda r: "None",
     0.03),
    ("app.tasks.billing.charge_invoice", 10,
     lambda r: f"('inv_{r.randrange(10**8):08d}',)",
     lambda r: f"{{'amount': Decimal('{r.randrange(100, 99999) / 100:.2f}'), 'currency': 'EUR', 'retry': True}}",
     lambda r: f"'ch_{uuid.UUID(int=r.getrandbits(128)).hex[:24]}'",
     0.25),
    ("app.tasks.sync.pull_account", 25,
     lambda r: "()",
     lambda r: f"{{'account_id': {r.randrange(10**6)}, 'full': False}}",
     lambda r: f"{{'updated': {r.randrange(50)}, 'deleted': 0}}",
     0.08),
    ("app.tasks.reports.build_daily", 10,
     lambda r: f"('{r.choice(['eu-west', 'us-east', 'ap-south'])}', '2026-11-{r.randrange(1, 29):02d}')",
     lambda r: "{'format': 'parquet', 'include_refunds': True, 'notify': ['ops@example.com']}",
     lambda r: f"'reports/daily/{r.randrange(10**6)}.parquet'",
     0.9),
]
TASK_WEIGHTS = [t[1] for t in TASKS]
EXCEPTIONS = [
    "ConnectionError('Connection to db-primary:5432 timed out')",
    "ValueError('invalid literal for int() with base 10: \\'n/a\\'')",
    "TimeoutError('upstream did not answer within 30s')",
]


def traceback_for(name: str, exc: str) -> str:
    module = name.rsplit(".", 1)[0].replace(".", "/")
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/venv/lib/python3.11/site-packages/celery/app/trace.py", line 453, in trace_task\n'
        "    R = retval = fun(*args, **kwargs)\n"
        '  File "/srv/app/venv/lib/python3.11/site-packages/celery/app/trace.py", line 736, in __protected_call__\n'
        "    return self.run(*args, **kwargs)\n"
        f'  File "/srv/app/{module}.py", line 88, in {name.rsplit(".", 1)[1]}\n'
        "    result = client.fetch(ident, timeout=30)\n"
        '  File "/srv/app/app/clients/base.py", line 142, in fetch\n'
        "    raise self.error_class(message)\n"
        f"{exc.split('(')[0]}: {exc.split('(', 1)[1][1:-2]}\n"
    )


def utcoffset() -> float:
    """celery.utils.time.utcoffset(): hours, as a float (0.0 on a UTC machine)."""
    if time.localtime().tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


def resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def envelope(body_obj, hostname: str, routing_key: str) -> bytes:
    """A kombu 5.7 message as the Redis transport publishes it (json.dumps defaults)."""
    body = base64.b64encode(json.dumps(body_obj).encode()).decode()
    return json.dumps({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": hostname},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": "celeryev", "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }).encode()


class Worker:
    """One synthetic Celery worker: its name, pid, Lamport clock and task stream."""

    def __init__(self, index: int, rng: random.Random, fail_ratio: float):
        self.hostname = f"celery{index:04d}@lg-node{index // 4:03d}.example.internal"
        self.pid = 1000 + index * 7
        self.clock = 0
        self.processed = 0
        self.rng = rng
        self.fail_ratio = fail_ratio
        self.pending: list[tuple[str, dict]] = []  # events of the current task not yet sent

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def event(self, type_: str, ts: float, **fields) -> dict:
        # celery.events.event.Event(type, hostname=, utcoffset=, pid=, clock=, **fields):
        # fields in that order, then timestamp, then type.
        ev = {"hostname": self.hostname, "utcoffset": UTCOFFSET, "pid": self.pid,
              "clock": self.tick()}
        ev.update(fields)
        ev["timestamp"] = ts
        ev["type"] = type_
        return ev

    def next_task(self) -> None:
        r = self.rng
        name, _, args, kwargs, result, median = r.choices(TASKS, TASK_WEIGHTS)[0]
        tid = str(uuid.UUID(int=r.getrandbits(128), version=4))
        runtime = round(median * r.lognormvariate(0, 0.6), 6)
        received = ("task-received", dict(
            uuid=tid, name=name, args=args(r), kwargs=kwargs(r), root_id=tid,
            parent_id=None, retries=0, eta=None, expires=None))
        started = ("task-started", dict(uuid=tid))
        if r.random() < self.fail_ratio:
            exc = r.choice(EXCEPTIONS)
            done = ("task-failed", dict(uuid=tid, exception=exc, traceback=traceback_for(name, exc)))
        else:
            done = ("task-succeeded", dict(uuid=tid, result=result(r), runtime=runtime))
        self.pending = [received, started, done]

    def task_events(self, n: int, ts: float) -> list[dict]:
        out = []
        for i in range(n):
            if not self.pending:
                self.next_task()
            type_, fields = self.pending.pop(0)
            if type_ in ("task-succeeded", "task-failed"):
                self.processed += 1
            out.append(self.event(type_, round(ts + i * 1e-6, 6), **fields))
        return out

    def heartbeat(self, ts: float) -> dict:
        r = self.rng
        load = round(r.uniform(0.5, 3.5), 2)
        return self.event(
            "worker-heartbeat", ts, freq=HEARTBEAT_FREQ, active=r.randrange(0, 9),
            processed=self.processed, loadavg=[load, round(load * 0.9, 2), round(load * 0.8, 2)],
            sw_ident="py-celery", sw_ver=CELERY_VERSION, sw_sys="Linux")

    def lifecycle(self, type_: str, ts: float) -> dict:
        return self.event(
            type_, ts, freq=HEARTBEAT_FREQ, active=0, processed=self.processed,
            loadavg=[0.5, 0.4, 0.3], sw_ident="py-celery", sw_ver=CELERY_VERSION, sw_sys="Linux")


UTCOFFSET = utcoffset()


def schedule(worker_ids, rate, duration, batch, online):
    """(offset seconds, kind, worker id, n task events), sorted by time.

    kind: 'hb' heartbeat, 'task' a task.multi batch, 'online'/'offline'."""
    n_workers = len(worker_ids)
    hb_rate = n_workers / HEARTBEAT_FREQ
    task_rate = rate - hb_rate
    if task_rate <= 0:
        raise SystemExit(f"--rate {rate} leaves no room for task events next to "
                         f"{hb_rate:g} heartbeats/s; lower --workers")
    items = []
    if online:
        for w in worker_ids:
            items.append((0.0, 0, "online", w, 1))
    for j, w in enumerate(worker_ids):
        t = HEARTBEAT_FREQ * j / n_workers
        while t < duration:
            items.append((t, 1, "hb", w, 1))
            t += HEARTBEAT_FREQ
    total_task_events = int(round(task_rate * duration))
    n_msgs = -(-total_task_events // batch)
    interval = batch / task_rate
    left = total_task_events
    for k in range(n_msgs):
        n = min(batch, left)
        left -= n
        items.append((k * interval, 2, "task", worker_ids[k % n_workers], n))
    if online:
        for w in worker_ids:
            items.append((duration, 3, "offline", w, 1))
    items.sort(key=lambda x: (x[0], x[1]))
    return items


def build(worker_ids, args, t0_wall, seed):
    """Pre-encode every message: [(offset, resp bytes, Counter of event types, n events)]."""
    rng = random.Random(seed)
    workers = {w: Worker(w, random.Random(rng.getrandbits(64)), args.fail_ratio) for w in worker_ids}
    prefix = f"/{args.db}.celeryev/".encode()
    out = []
    for t, _, kind, w, n in schedule(worker_ids, args.rate_share, args.duration, args.batch, args.online):
        wk = workers[w]
        ts = round(t0_wall + t, 6)
        if kind == "task":
            evs = wk.task_events(n, ts)
            rk = "task.multi"
            payload = envelope(evs, wk.hostname, rk)
            types = Counter(e["type"] for e in evs)
        else:
            type_ = {"hb": "worker-heartbeat", "online": "worker-online",
                     "offline": "worker-offline"}[kind]
            ev = wk.heartbeat(ts) if kind == "hb" else wk.lifecycle(type_, ts)
            rk = type_.replace("-", ".")
            payload = envelope(ev, wk.hostname, rk)
            types = Counter({type_: 1})
        out.append((t, resp(b"PUBLISH", prefix + rk.encode(), payload), types, sum(types.values())))
    return out


def connect(url):
    client = redis.Redis.from_url(url)
    pool = client.connection_pool
    try:
        conn = pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        conn = pool.get_connection("PUBLISH")
    conn.connect()
    return conn


def publish(messages, url, start_mono, max_pipeline):
    """Send each message at its offset after start_mono; returns the counts."""
    conn = connect(url)
    published = Counter()
    unheard = Counter()  # events in messages that reached no subscriber (PUBLISH replied 0)
    n_msgs = n_bytes = 0
    max_lag = 0.0
    lag_sum = 0.0
    i = 0
    total = len(messages)
    # Wait for the start without spinning.
    while True:
        d = start_mono - time.monotonic()
        if d <= 0:
            break
        time.sleep(min(d, 0.05))
    first_send = None
    while i < total:
        now = time.monotonic() - start_mono
        j = i
        while j < total and messages[j][0] <= now and j - i < max_pipeline:
            j += 1
        if j == i:
            time.sleep(min(max(messages[i][0] - now, 0.0), 0.005))
            continue
        if first_send is None:
            first_send = time.monotonic()
        chunk = messages[i:j]
        conn.send_packed_command([b"".join(m[1] for m in chunk)], check_health=False)
        for t, data, types, n in chunk:
            receivers = conn.read_response()
            if isinstance(receivers, Exception):
                raise receivers
            published.update(types)
            if receivers == 0:
                unheard.update(types)
            lag = now - t
            lag_sum += lag
            if lag > max_lag:
                max_lag = lag
            n_msgs += 1
            n_bytes += len(data)
        i = j
    end = time.monotonic()
    conn.disconnect()
    return {
        "published": dict(published), "unheard": dict(unheard), "messages": n_msgs,
        "bytes": n_bytes, "start_mono_lateness": (first_send or end) - start_mono,
        "elapsed": end - start_mono, "max_lag": max_lag,
        "mean_lag": lag_sum / n_msgs if n_msgs else 0.0,
    }


def run_share(proc, worker_ids, args, t0_wall, queue=None):
    t_build = time.monotonic()
    messages = build(worker_ids, args, t0_wall, args.seed * 1000 + proc)
    build_s = time.monotonic() - t_build
    # Map the wall-clock start onto this process's monotonic clock. If encoding overran the
    # start, start now rather than burst to catch up: the rate holds, and the encoded
    # timestamps are that much in the past (reported as late_start).
    start_mono = time.monotonic() + (t0_wall - time.time())
    late_start = max(0.0, time.monotonic() - start_mono)
    if late_start > 0:
        start_mono = time.monotonic()
    cpu0 = time.process_time()
    result = publish(messages, args.redis, start_mono, args.max_pipeline)
    result.update(build_s=build_s, late_start=late_start, proc=proc,
                  publish_cpu_s=time.process_time() - cpu0)
    if queue is not None:
        queue.put(result)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="broker URL (db index honoured)")
    ap.add_argument("--rate", type=float, default=20000, help="events per second, heartbeats included")
    ap.add_argument("--duration", type=float, default=30, help="seconds of load")
    ap.add_argument("--workers", type=int, default=100, help="synthetic workers (heartbeat every 2 s each)")
    ap.add_argument("--batch", type=int, default=10,
                    help="task events per task.multi message (Celery: 1..24, buffer_limit 24)")
    ap.add_argument("--fail-ratio", type=float, default=0.05, help="share of tasks that fail")
    ap.add_argument("--procs", type=int, default=1, help="publishing processes (workers and rate split)")
    ap.add_argument("--online", action="store_true",
                    help="also send worker-online at the start and worker-offline at the end")
    ap.add_argument("--max-pipeline", type=int, default=2000, help="most PUBLISHes in one pipeline")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start-delay", type=float, default=None,
                    help="seconds between now and the first event (default: estimated encode time)")
    ap.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.batch <= 10000:
        ap.error("--batch must be >= 1")
    if args.workers < args.procs:
        ap.error("need at least one worker per process")
    args.db = redis.Redis.from_url(args.redis).connection_pool.connection_kwargs.get("db", 0)
    args.rate_share = args.rate / args.procs
    # Fail fast if the broker is not there.
    redis.Redis.from_url(args.redis).ping()

    shares = [list(range(p, args.workers, args.procs)) for p in range(args.procs)]
    if args.start_delay is None:
        # Calibrate: time the encoding of a sample, extrapolate to this process's share.
        sample = argparse.Namespace(**vars(args))
        sample.duration = 0.5
        t = time.monotonic()
        n = len(build(shares[0], sample, time.time(), 0))
        per_msg = (time.monotonic() - t) / max(n, 1)
        msgs = (args.rate / args.procs) * args.duration / args.batch + len(shares[0]) * args.duration / 2
        args.start_delay = 2.0 + 2.0 * per_msg * msgs
    t0_wall = time.time() + args.start_delay
    print(f"loadgen: {args.rate:g} events/s for {args.duration:g} s, {args.workers} workers, "
          f"batch {args.batch}, {args.procs} process(es); encoding, first event in "
          f"{args.start_delay:.1f} s", file=sys.stderr, flush=True)

    if args.procs == 1:
        results = [run_share(0, shares[0], args, t0_wall)]
    else:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        procs = [ctx.Process(target=run_share, args=(p, shares[p], args, t0_wall, q))
                 for p in range(args.procs)]
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
        for p in procs:
            p.join()
            if p.exitcode:
                raise SystemExit(f"a publishing process failed (exit {p.exitcode})")

    published = Counter()
    unheard = Counter()
    for r in results:
        published.update(r["published"])
        unheard.update(r["unheard"])
    total = sum(published.values())
    # Over the scheduled duration, or longer if the last message went out late.
    elapsed = max([args.duration] + [r["elapsed"] for r in results])
    summary = {
        "rate_offered": args.rate, "duration": args.duration, "workers": args.workers,
        "batch": args.batch, "procs": args.procs,
        "published": dict(sorted(published.items())), "published_total": total,
        "unheard": dict(sorted(unheard.items())), "unheard_total": sum(unheard.values()),
        "messages": sum(r["messages"] for r in results),
        "bytes": sum(r["bytes"] for r in results),
        "elapsed_s": elapsed, "achieved_rate": total / elapsed if elapsed else 0.0,
        "max_lag_s": max(r["max_lag"] for r in results),
        "mean_lag_s": sum(r["mean_lag"] * r["messages"] for r in results) / max(1, sum(r["messages"] for r in results)),
        "late_start_s": max(r["late_start"] for r in results),
        "build_s": max(r["build_s"] for r in results),
        "publish_cpu_s": sum(r["publish_cpu_s"] for r in results),
        "t0_wall": t0_wall + max(r["late_start"] for r in results),
    }
    held = summary["max_lag_s"] < 0.25 and elapsed < args.duration + 0.5
    summary["held_rate"] = held

    w = max(len(k) for k in published) if published else 10
    print(f"{'type':<{w}}  {'published':>10}  {'no subscriber':>13}")
    for k, v in sorted(published.items()):
        print(f"{k:<{w}}  {v:>10}  {unheard.get(k, 0):>13}")
    print(f"{'total':<{w}}  {total:>10}  {summary['unheard_total']:>13}")
    print(f"messages {summary['messages']}, {summary['bytes'] / 2**20:.1f} MiB "
          f"({summary['bytes'] / max(1, summary['messages']):.0f} B/message); "
          f"achieved {summary['achieved_rate']:.0f} events/s over {elapsed:.2f} s "
          f"(offered {args.rate:g}); lag behind schedule max {summary['max_lag_s'] * 1000:.1f} ms, "
          f"mean {summary['mean_lag_s'] * 1000:.2f} ms; encode {summary['build_s']:.1f} s"
          f"{', encoding overran the start by %.2f s (event timestamps that much in the past)' % summary['late_start_s'] if summary['late_start_s'] > 0 else ''}; "
          f"{'held the rate' if held else 'DID NOT hold the rate'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
