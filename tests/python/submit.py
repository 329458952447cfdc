"""Publishes tasks to the test app without waiting for results.

usage: submit.py TASK COUNT [ARG ...] [--queue Q] [--priority P]
"""
import argparse
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from warden_test_app import app  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("task")
parser.add_argument("count", type=int)
parser.add_argument("args", nargs="*")
parser.add_argument("--queue", default=None)
parser.add_argument("--priority", type=int, default=None)
opts = parser.parse_args()

args = [float(a) if a.replace(".", "", 1).isdigit() else a for a in opts.args]
with app.connection_for_write() as conn:
    for _ in range(opts.count):
        app.send_task(
            f"warden_test_app.{opts.task}",
            args=args,
            queue=opts.queue,
            priority=opts.priority,
            connection=conn,
        )
print(f"sent {opts.count} {opts.task}")
