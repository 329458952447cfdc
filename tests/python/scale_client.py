"""A client generated from proto/ by grpcio-tools, with grpc's default message limits
(4 MiB received): reads one ListWorkers page of PAGE_SIZE, or one whole WatchFleet snapshot
(begin, chunks, end), and prints what it got as JSON.

usage: scale_client.py GENERATED_DIR ADDRESS list PAGE_SIZE
       scale_client.py GENERATED_DIR ADDRESS watch
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from warden.v1 import worker_health_pb2, worker_health_pb2_grpc  # noqa: E402

address, mode = sys.argv[2], sys.argv[3]
with grpc.insecure_channel(address) as channel:
    stub = worker_health_pb2_grpc.WorkerHealthStub(channel)
    if mode == "list":
        page_size = int(sys.argv[4])
        response = stub.ListWorkers(
            worker_health_pb2.ListWorkersRequest(page_size=page_size), timeout=30
        )
        print(json.dumps({
            "workers": len(response.workers),
            "total_size": response.total_size,
            "bytes": response.ByteSize(),
            "next_page_token": bool(response.next_page_token),
        }))
    else:
        workers, messages, largest, reason, ended = 0, 0, 0, None, False
        for message in stub.WatchFleet(worker_health_pb2.WatchFleetRequest(), timeout=60):
            messages += 1
            largest = max(largest, message.ByteSize())
            kind = message.WhichOneof("event")
            if kind == "snapshot_begin":
                reason = worker_health_pb2.SnapshotReason.Name(message.snapshot_begin.reason)
            elif kind == "snapshot_chunk":
                workers += len(message.snapshot_chunk.workers)
            elif kind == "snapshot_end":
                ended = bool(message.resume_token)
                break
        print(json.dumps({
            "workers": workers,
            "messages": messages,
            "largest_message_bytes": largest,
            "reason": reason,
            "ended_with_token": ended,
        }))
