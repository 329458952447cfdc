#!/usr/bin/env python3
"""Writes the seed inputs under fuzz/seeds/<target>/ (run from anywhere; stdlib only).

Envelopes are built the way kombu (and warden's `envelope::encode`) writes them: a JSON
object whose `body` is the base64 of the JSON payload.
"""
import base64
import json
import pathlib

SEEDS = pathlib.Path(__file__).resolve().parent / "seeds"


def envelope(body, exchange, routing_key, headers=None, content_type="application/json",
             body_encoding="base64", raw_body=None):
    text = raw_body if raw_body is not None else json.dumps(body, separators=(",", ":"))
    if body_encoding == "base64" and raw_body is None:
        text = base64.b64encode(text.encode()).decode()
    return json.dumps({
        "body": text,
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": headers if headers is not None else {"hostname": "w1@h"},
        "properties": {
            "body_encoding": body_encoding,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "delivery_mode": 1,
            "delivery_tag": "6f1c5b55-0a43-4d0e-9a55-3a8a4f1f0d11",
            "priority": 0,
        },
    }, separators=(",", ":"))


HEARTBEAT = {"hostname": "w1@h", "utcoffset": 0, "pid": 42, "clock": 7, "freq": 2.0,
             "active": 1, "processed": 10, "loadavg": [0.5, 0.25, 0.1],
             "sw_ident": "py-celery", "sw_ver": "5.5.3", "sw_sys": "Linux",
             "timestamp": 1700000000.5, "type": "worker-heartbeat"}
ONLINE = dict(HEARTBEAT, type="worker-online")
OFFLINE = {"hostname": "w1@h", "timestamp": 1700000100.0, "type": "worker-offline"}
TASK_MULTI = [
    {"type": "task-received", "uuid": "u1", "name": "app.add", "hostname": "w1@h",
     "timestamp": 1700000000.0, "args": "(1, 2)", "kwargs": "{}", "retries": 0},
    {"type": "task-started", "uuid": "u1", "hostname": "w1@h", "timestamp": 1700000000.1,
     "pid": 43},
    {"type": "task-succeeded", "uuid": "u1", "hostname": "w1@h", "runtime": 0.25,
     "result": "3", "timestamp": 1700000000.35},
    {"type": "task-failed", "uuid": "u2", "hostname": "w1@h", "exception": "ValueError()",
     "traceback": "Traceback...", "timestamp": 1700000001.0},
    {"type": "task-retried", "uuid": "u3", "hostname": "w1@h", "timestamp": 1700000002.0},
    {"type": "task-revoked", "uuid": "u4", "hostname": "w1@h", "terminated": True},
    {"type": "task-rejected", "uuid": "u5", "hostname": "w1@h"},
    {"type": "task-sent", "uuid": "u6", "hostname": "gen1@h"},
]
BAD_MULTI = [TASK_MULTI[0], {"type": "task-failed", "hostname": "w1@h"}, {"no-type": True}, 5]

STATS = {"broker": {"hostname": "127.0.0.1", "port": 6379, "transport": "redis"},
         "clock": "42", "pid": 4242, "prefetch_count": 8, "uptime": 12,
         "pool": {"implementation": "celery.concurrency.prefork:TaskPool",
                  "max-concurrency": 2, "processes": [4243, 4244],
                  "max-tasks-per-child": "N/A", "timeouts": [0, 0]},
         "rusage": {"utime": 0.5}, "total": {"app.add": 3, "app.fail": 1}}
ACTIVE = [{"id": "u1", "name": "app.add", "args": [1, 2], "kwargs": {}, "type": "app.add",
           "hostname": "w1@h", "time_start": 1700000000.5, "acknowledged": True,
           "delivery_info": {"exchange": "", "routing_key": "celery", "priority": 0,
                             "redelivered": False}, "worker_pid": 4243}]
ACTIVE_QUEUES = [{"name": "celery", "exchange": {"name": "celery", "type": "direct"},
                  "routing_key": "celery", "durable": True, "exclusive": False},
                 {"name": "fast", "exchange": "fast", "routing_key": "fast"}]
REGISTERED = ["app.add", "app.fail [rate_limit=10/m]", "app.slow"]

FILES = {
    "envelope": {
        "heartbeat.json": envelope(HEARTBEAT, "celeryev", "worker.heartbeat"),
        "task_multi.json": envelope(TASK_MULTI, "celeryev", "task.multi"),
        "pidbox_reply.json": envelope({"w1@h": {"ok": "pong"}}, "reply.celery.pidbox",
                                      "b2b4c3e1-reply", headers={"ticket": "t1", "clock": 3}),
        "task_message_v2.json": envelope([[1, 2], {}, {"callbacks": None, "errbacks": None,
                                                         "chain": None, "chord": None}],
                                         "", "celery",
                                         headers={"lang": "py", "task": "app.add", "id": "u1",
                                                  "retries": 0, "eta": None}),
        "utf8_body.json": envelope({"a": 1}, "celeryev", "worker.online",
                                   body_encoding="utf-8"),
        "pickle_refused.json": envelope({"a": 1}, "", "celery",
                                        content_type="application/x-python-serialize"),
        "bad_base64.json": envelope(None, "celeryev", "x", raw_body="!!not base64"),
    },
    "events": {
        "heartbeat.json": envelope(HEARTBEAT, "celeryev", "worker.heartbeat"),
        "online.json": envelope(ONLINE, "celeryev", "worker.online"),
        "task_multi.json": envelope(TASK_MULTI, "celeryev", "task.multi"),
        # `B` + body: the target wraps the body in an envelope itself.
        "body_heartbeat": "B" + json.dumps(HEARTBEAT, separators=(",", ":")),
        "body_offline": "B" + json.dumps(OFFLINE, separators=(",", ":")),
        "body_task_multi": "B" + json.dumps(TASK_MULTI, separators=(",", ":")),
        "body_bad_multi": "B" + json.dumps(BAD_MULTI, separators=(",", ":")),
    },
    "inspect": {
        "ping.json": {"w1@h": {"ok": "pong"}},
        "stats.json": {"w1@h": STATS},
        "active.json": {"w1@h": ACTIVE},
        "active_queues.json": {"w1@h": ACTIVE_QUEUES},
        "registered.json": {"w1@h": REGISTERED, "w2@h": ["app.add"]},
    },
}

for target, files in FILES.items():
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if not isinstance(content, str):
            content = json.dumps(content, separators=(",", ":"))
        (folder / name).write_text(content)
print(f"wrote {sum(len(f) for f in FILES.values())} seeds under {SEEDS}")
