"""A client generated from proto/ by grpcio-tools: calls ListWorkers and prints JSON.

usage: list_workers_client.py GENERATED_DIR ADDRESS
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from warden.v1 import worker_health_pb2, worker_health_pb2_grpc  # noqa: E402

with grpc.insecure_channel(sys.argv[2]) as channel:
    stub = worker_health_pb2_grpc.WorkerHealthStub(channel)
    response = stub.ListWorkers(worker_health_pb2.ListWorkersRequest(page_size=50), timeout=10)
    print(json.dumps(json_format.MessageToDict(response)))
