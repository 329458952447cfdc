"""Shared by scripts/bench-e2e and scripts/bench-flower: a private redis-server, a monitor under
test (warden or Flower), scripts/loadgen.py, /proc sampling and the result tables.

Standard library only; loadgen runs under a Python that has redis-py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_python() -> str:
    for p in (os.environ.get("BENCH_PYTHON"), str(ROOT / ".venv-bench/bin/python"),
              str(ROOT / ".venv/bin/python")):
        if p and os.access(p, os.X_OK):
            return p
    return sys.executable


# ---------------------------------------------------------------- /proc


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_status(pid: int, key: str) -> int | None:
    """A kB field of /proc/PID/status (VmRSS, VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / CLK_TCK


def machine_description() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = proc_meminfo_total()
    return (f"{os.cpu_count()} cores ({model}), {mem / 2**30:.1f} GiB RAM, "
            f"Linux {os.uname().release}")


def proc_meminfo_total() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- redis


class RedisClient:
    """A minimal RESP2 client (enough for INFO, CLIENT LIST, PUBSUB NUMPAT, PING)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()


class RedisServer:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.logfile = workdir / "redis.log"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--logfile", str(self.logfile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 10
        while True:
            try:
                c = RedisClient(self.port)
                if c.cmd("PING") == "PONG":
                    c.close()
                    break
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"redis-server did not start (see {self.logfile})")
            time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> RedisClient:
        return RedisClient(self.port)

    def output_buffer_drops(self) -> list[str]:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return []
        return [l for l in text.splitlines() if "output buffer limits" in l]

    def stop(self):
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM the process (and its session, which it leads), then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def parse_client_list(text: str) -> list[dict]:
    clients = []
    for line in (text or "").splitlines():
        d = {}
        for part in line.split(" "):
            if "=" in part:
                k, v = part.split("=", 1)
                d[k] = v
        clients.append(d)
    return clients


# ---------------------------------------------------------------- sampling


class Sampler(threading.Thread):
    """Every `interval` s (0.25): RSS and CPU of the named pids, the machine's busy CPU, and the
    pattern subscribers of the redis server (their ids and output buffer memory)."""

    def __init__(self, pids: dict[str, int], redis: RedisServer, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pids = dict(pids)
        self.redis = redis
        self.interval = interval
        self.samples: list[dict] = []
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def add_pid(self, name: str, pid: int):
        with self.lock:
            self.pids[name] = pid

    def run(self):
        client = self.redis.client()
        while not self.stop_event.is_set():
            s = {"t": time.time(), "busy": machine_busy_s(), "rss": {}, "cpu": {}}
            with self.lock:
                pids = dict(self.pids)
            for name, pid in pids.items():
                s["rss"][name] = proc_status(pid, "VmRSS")
                s["cpu"][name] = proc_cpu_s(pid)
            try:
                subs = [c for c in parse_client_list(client.cmd("CLIENT", "LIST"))
                        if c.get("psub", "0") != "0"]
                s["psub_ids"] = [c.get("id") for c in subs]
                s["omem"] = max([int(c.get("omem", 0)) for c in subs] or [0])
            except (OSError, RuntimeError, ConnectionError):
                s["psub_ids"], s["omem"] = None, None
            self.samples.append(s)
            self.stop_event.wait(self.interval)
        client.close()

    def stop(self):
        self.stop_event.set()
        self.join(5)

    def at(self, t: float) -> dict | None:
        """The first sample at or after t (or the last one)."""
        for s in self.samples:
            if s["t"] >= t:
                return s
        return self.samples[-1] if self.samples else None

    def window(self, t0: float, t1: float) -> list[dict]:
        return [s for s in self.samples if t0 <= s["t"] <= t1]


def cpu_between(a: dict, b: dict, name: str) -> float | None:
    x, y = a["cpu"].get(name), b["cpu"].get(name)
    if x is None or y is None:
        return None
    return y - x


# ---------------------------------------------------------------- HTTP, Prometheus


def http_get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (OSError, urllib.error.URLError):
        return 0, ""


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
PROM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str):
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = PROM_LINE.match(line)
        if not m:
            continue
        labels = dict(PROM_LABEL.findall(m.group(3) or ""))
        try:
            yield m.group(1), labels, float(m.group(4))
        except ValueError:
            continue


# ---------------------------------------------------------------- load


def run_loadgen(python: str, url: str, rate: float, duration: float, workers: int, batch: int,
                procs: int, workdir: Path, tag: str, on_start=None) -> dict:
    out = workdir / f"loadgen-{tag}.json"
    logf = workdir / f"loadgen-{tag}.log"
    cmd = [python, str(ROOT / "scripts/loadgen.py"), "--redis", url, "--rate", str(rate),
           "--duration", str(duration), "--workers", str(workers), "--batch", str(batch),
           "--procs", str(procs), "--json", str(out)]
    log("$ " + " ".join(cmd))
    with open(logf, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        if on_start:
            on_start(p)
        try:
            rc = p.wait()
        except BaseException:
            stop_process(p)
            raise
    if rc != 0:
        raise SystemExit(f"loadgen failed (exit {rc}); see {logf}:\n{logf.read_text()[-2000:]}")
    print(logf.read_text(), file=sys.stderr, end="")
    return json.loads(out.read_text())


def wait_quiet(max_wait: float, threshold_cores: float = 0.3, window: float = 3.0) -> float:
    """Wait (up to max_wait s) until the rest of the machine uses < threshold cores; returns
    the cores busy over the last window."""
    deadline = time.time() + max_wait
    while True:
        a = machine_busy_s()
        time.sleep(window)
        busy = (machine_busy_s() - a) / window
        if busy < threshold_cores or time.time() > deadline:
            if busy >= threshold_cores:
                log(f"machine still busy ({busy:.2f} cores in use by other processes); going on")
            return busy
        log(f"waiting for a quieter machine ({busy:.2f} cores in use by others)")


def drain(read_counts, published_total: int, quiet: float, timeout: float):
    """Poll until the monitor has counted everything, or its count stops moving for `quiet` s.

    Returns (counts, wall time when the count reached its final value)."""
    start = time.time()
    last_total, last_change = -1, start
    counts = {}
    while True:
        c = read_counts()
        if c is not None:
            counts = c
            total = sum(c.values())
            if total != last_total:
                last_total, last_change = total, time.time()
            if total >= published_total:
                return counts, time.time()
        if time.time() - last_change > quiet or time.time() - start > timeout:
            return counts, last_change
        time.sleep(0.5)


EVENT_TYPES = ["worker-heartbeat", "task-received", "task-started", "task-succeeded", "task-failed"]


def summarise(name: str, rate: float, lg: dict, applied: dict, sampler: Sampler, t_ready: float,
              drain_s: float, backlog_at_end: int, extra: dict) -> dict:
    t0 = lg["t0_wall"]
    t_end_load = t0 + lg["elapsed_s"]
    t_drained = t_end_load + drain_s
    s0, s1, s2 = sampler.at(t0), sampler.at(t_end_load), sampler.at(t_drained)
    idle = sampler.at(t_ready)
    win = sampler.window(t0, t_drained + sampler.interval)
    rss = [s["rss"].get("monitor") for s in win if s["rss"].get("monitor")]
    published = lg["published"]
    per_type = {}
    for t in sorted(set(published) | set(applied)):
        p, a = published.get(t, 0), int(applied.get(t, 0))
        per_type[t] = {"published": p, "applied": a, "lost": p - a}
    pub_total = lg["published_total"]
    app_total = int(sum(applied.values()))
    load_s = t_end_load - t0
    cpu_load = cpu_between(s0, s1, "monitor") if s0 and s1 else None
    cpu_all = cpu_between(s0, s2, "monitor") if s0 and s2 else None
    redis_cpu = cpu_between(s0, s1, "redis") if s0 and s1 else None
    busy = (s1["busy"] - s0["busy"]) if s0 and s1 else None
    ours = sum(x for x in (cpu_load, redis_cpu, lg.get("publish_cpu_s")) if x)
    omems = [s["omem"] for s in win if s.get("omem") is not None]
    sub_ids = set()
    for s in win:
        sub_ids.update(s.get("psub_ids") or [])
    return {
        "monitor": name, "rate_offered": rate, "published": pub_total, "applied": app_total,
        "lost": pub_total - app_total,
        "loss_pct": 100.0 * (pub_total - app_total) / pub_total if pub_total else 0.0,
        "per_type": per_type,
        "achieved_rate": lg["achieved_rate"], "loadgen_held_rate": lg["held_rate"],
        "loadgen_max_lag_s": lg["max_lag_s"], "unheard": lg["unheard_total"],
        "messages": lg["messages"], "bytes": lg["bytes"],
        "idle_rss_mib": (idle["rss"].get("monitor") or 0) / 2**20 if idle else None,
        "peak_rss_mib": max(rss) / 2**20 if rss else None,
        "hwm_rss_mib": (extra.pop("hwm", None) or 0) / 2**20,
        "cpu_s_load": cpu_load, "cpu_pct_load": 100.0 * cpu_load / load_s if cpu_load is not None else None,
        "cpu_s_total": cpu_all, "load_s": load_s, "drain_s": drain_s,
        "backlog_at_end_of_load": backlog_at_end,
        "redis_cpu_pct": 100.0 * redis_cpu / load_s if redis_cpu is not None else None,
        "loadgen_publish_cpu_pct": 100.0 * lg["publish_cpu_s"] / load_s,
        "other_cores": (busy - ours) / load_s if busy is not None else None,
        "max_omem_mib": max(omems) / 2**20 if omems else None,
        "subscriber_ids": sorted(sub_ids),
        "resubscribed": len(sub_ids) > 1,
        **extra,
    }


def fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    """A markdown table of the headline figures."""
    head = ["monitor", "rate offered", "achieved", "published", "applied", "lost", "loss %",
            "peak RSS MiB", "CPU s (load+drain)", "% of one core (load)", "drain s",
            "max omem MiB", "sub. dropped"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        peak = max(x for x in (r.get("peak_rss_mib"), r.get("hwm_rss_mib")) if x is not None) \
            if r.get("peak_rss_mib") or r.get("hwm_rss_mib") else None
        lines.append("| " + " | ".join([
            r["monitor"], f"{r['rate_offered']:,.0f}", f"{r['achieved_rate']:,.0f}",
            f"{r['published']:,}", f"{r['applied']:,}", f"{r['lost']:,}",
            f"{r['loss_pct']:.2f}", fmt(peak, ".1f"), fmt(r.get("cpu_s_total"), ".1f"),
            fmt(r.get("cpu_pct_load"), ".0f"), fmt(r.get("drain_s"), ".1f"),
            fmt(r.get("max_omem_mib"), ".1f"),
            ("yes" if r.get("redis_drops") or r.get("resubscribed") else "no"),
        ]) + " |")
    return "\n".join(lines)


def type_table(rows: list[dict]) -> str:
    lines = ["| monitor | rate | type | published | applied | lost |", "|---|---|---|---|---|---|"]
    for r in rows:
        for t, v in r["per_type"].items():
            lines.append(f"| {r['monitor']} | {r['rate_offered']:,.0f} | {t} | {v['published']:,} | "
                         f"{v['applied']:,} | {v['lost']:,} |")
    return "\n".join(lines)


def context_table(rows: list[dict]) -> str:
    lines = ["| monitor | rate | idle RSS MiB | loadgen max lag ms | backlog at end of load | "
             "redis-server % core | loadgen publish % core | other processes (cores) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['monitor']} | {r['rate_offered']:,.0f} | {fmt(r.get('idle_rss_mib'), '.1f')} | "
            f"{r['loadgen_max_lag_s'] * 1000:.1f} | {r['backlog_at_end_of_load']:,} | "
            f"{fmt(r.get('redis_cpu_pct'), '.0f')} | {r['loadgen_publish_cpu_pct']:.0f} | "
            f"{fmt(None if r.get('other_cores') is None else max(0.0, r['other_cores']), '.2f')} |")
    return "\n".join(lines)


class Workdir:
    def __init__(self, base: Path, name: str):
        self.path = base / name
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)


# ---------------------------------------------------------------- one run


class Monitor:
    """What a run needs from the process under test."""

    name = "monitor"
    proc: subprocess.Popen | None = None

    def start(self, redis: RedisServer, workdir: Path) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    def counts(self) -> dict | None:
        """Events processed so far, by type (None if it could not be read)."""
        raise NotImplementedError

    def extra(self) -> dict:
        return {}

    def stop(self) -> None:
        stop_process(self.proc)


def wait_subscribed(redis: RedisServer, timeout: float) -> None:
    c = redis.client()
    deadline = time.time() + timeout
    try:
        while c.cmd("PUBSUB", "NUMPAT") < 1:
            if time.time() > deadline:
                raise SystemExit("the monitor never subscribed to the event stream")
            time.sleep(0.1)
    finally:
        c.close()


def run_rate(monitor: Monitor, rate: float, args, base: Path) -> dict:
    wd = Workdir(base, f"{monitor.name}-{int(rate)}").path
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    redis = RedisServer(wd)
    sampler = None
    try:
        monitor.start(redis, wd)
        monitor.wait_ready(60)
        wait_subscribed(redis, 30)
        sampler = Sampler({"monitor": monitor.proc.pid, "redis": redis.proc.pid}, redis)
        sampler.start()
        time.sleep(2)  # an idle sample
        t_ready = time.time()
        lg = run_loadgen(args.python, redis.url, rate, args.duration, args.workers, args.batch,
                         args.procs, wd, str(int(rate)),
                         on_start=lambda p: sampler.add_pid("loadgen", p.pid))
        now = monitor.counts() or {}
        backlog = lg["published_total"] - int(sum(now.values()))
        applied, drain_s = drain(monitor.counts, lg["published_total"], args.drain_quiet,
                                 args.drain_timeout)
        # From the end of the load (not of the loadgen process) to the last count seen.
        drain_s = max(0.0, drain_s - (lg["t0_wall"] + lg["elapsed_s"]))
        extra = monitor.extra()
        extra["hwm"] = proc_status(monitor.proc.pid, "VmHWM")
        drops = redis.output_buffer_drops()
        extra["redis_drops"] = len(drops)
        extra["redis_drop_lines"] = drops[:5]
        sampler.stop()
        result = summarise(monitor.name, rate, lg, applied, sampler, t_ready, drain_s, backlog,
                           extra)
        result["workdir"] = str(wd)
        (wd / "samples.json").write_text(json.dumps(
            [{"t": round(x["t"] - lg["t0_wall"], 3), **{k: x[k] for k in x if k != "t"}}
             for x in sampler.samples]))
        return result
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        monitor.stop()
        redis.stop()


def common_args(ap, rates: str):
    ap.add_argument("--rates", default=rates,
                    help="comma-separated events/s to offer, one fresh run each (default %(default)s)")
    ap.add_argument("--duration", type=float, default=30, help="seconds of load per run")
    ap.add_argument("--workers", type=int, default=100, help="synthetic workers")
    ap.add_argument("--batch", type=int, default=10, help="task events per task.multi message")
    ap.add_argument("--procs", type=int, default=1, help="loadgen publishing processes")
    ap.add_argument("--python", default=default_python(),
                    help="Python with redis-py that runs loadgen (default %(default)s)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "target/bench-e2e",
                    help="logs and results JSON (default %(default)s)")
    ap.add_argument("--drain-quiet", type=float, default=5,
                    help="after the load, stop waiting once the count is still for this long")
    ap.add_argument("--drain-timeout", type=float, default=180,
                    help="after the load, wait at most this long for the count to catch up")
    ap.add_argument("--wait-quiet", type=float, default=60,
                    help="before each run, wait up to this long for other processes to go quiet")


def print_report(title: str, rows: list[dict], compare: list[dict] | None = None) -> str:
    allrows = (compare or []) + rows
    text = (f"## {title}\n\nMachine: {machine_description()}\n\n{table(allrows)}\n\n"
            f"Per type:\n\n{type_table(allrows)}\n\nContext:\n\n{context_table(allrows)}\n")
    print(text)
    return text
