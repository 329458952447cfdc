"""The Celery app the integration tests and the demo run as real workers.

Tasks with known behaviour, so that tests can compare warden's figures with ground truth:
`add` succeeds at once, `sleep_for` runs for a given time, `fail` raises, `retry_twice`
retries twice and then succeeds.
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
