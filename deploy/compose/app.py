"""A tiny Celery app for the compose demo: warden watches the worker that runs it."""
import os
import time

from celery import Celery

app = Celery("demo", broker=os.environ.get("CELERY_BROKER_URL", "redis://redis:6379/0"))
app.conf.worker_send_task_events = True
app.conf.task_send_sent_event = True


@app.task
def add(x, y):
    return x + y


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds
