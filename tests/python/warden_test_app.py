"""The Celery app the integration tests and the demo run as real workers.

Tasks with known behaviour, so that tests can compare warden's figures with ground truth:
`add` succeeds at once, `sleep_for` runs for a given time, `fail` raises, `retry_twice`
retries twice and then succeeds, `burn` spins the CPU as a control file says.
"""
import os
import time

from celery import Celery

app = Celery("warden_test_app", broker=os.environ.get("WARDEN_TEST_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="celery",
    result_backend=None,
    worker_prefetch_multiplier=int(os.environ.get("WARDEN_TEST_PREFETCH", "4")),
    # Control tests restart pools in place (warden's RestartWorkers mode POOL).
    worker_pool_restarts=True,
    # Producers publish task-sent events when a test asks (celery_task_sent_total).
    task_send_sent_event=bool(os.environ.get("WARDEN_TEST_SENT_EVENT")),
)
if os.environ.get("WARDEN_TEST_KEYPREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["WARDEN_TEST_KEYPREFIX"]}


@app.task
def add(x, y):
    return x + y


@app.task
def sleep_for(seconds):
    time.sleep(float(seconds))
    return seconds


@app.task
def fail(message="expected failure"):
    raise RuntimeError(message)


@app.task(bind=True, max_retries=5, default_retry_delay=0.1)
def retry_twice(self):
    if self.request.retries < 2:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task
def burn(control, limit=120.0):
    """Spins the CPU at the duty cycle written in the file `control` ("0.25": a quarter of each
    0.2 s slice burning, the rest asleep; "1": all of it) until the file says "stop" or is
    gone, or `limit` seconds passed. The duty is counted in CPU time, so that a process that
    gets only part of a core on a busy machine still burns its share. Returns the CPU seconds
    burnt."""
    slice_ = 0.2
    started = time.monotonic()
    cpu_start = time.process_time()
    while time.monotonic() - started < float(limit):
        try:
            with open(control) as f:
                text = f.read().strip()
        except OSError:
            break
        if text == "stop":
            break
        duty = min(max(float(text or 0), 0.0), 1.0)
        until = time.process_time() + duty * slice_
        while time.process_time() < until:
            pass
        if duty < 1.0:
            time.sleep((1.0 - duty) * slice_)
    return time.process_time() - cpu_start
