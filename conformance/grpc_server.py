"""grpcio server instrumented by py-grpc-prometheus.

Serves revertname.RevertName/RevertName (an empty name is
INVALID_ARGUMENT) and timeservice.Time/WhatTimeIs from the repository's
.proto files, each after 1-10 ms. Binds the gRPC and metrics ports given
(0: any free port) on 127.0.0.1 and prints `ready grpc=PORT metrics=PORT`
once both listen.
"""

import argparse
import os
import random
import sys
import time
from concurrent import futures

import grpc
from prometheus_client import start_http_server
from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
sys.path.insert(0, PROTO_DIR)
revert_pb2, revert_grpc = grpc.protos_and_services("revert_name.proto")
time_pb2, time_grpc = grpc.protos_and_services("time.proto")


def pause():
    time.sleep(random.uniform(0.001, 0.01))


class RevertName(revert_grpc.RevertNameServicer):
    def RevertName(self, request, context):
        pause()
        if not request.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name is empty")
        return revert_pb2.RevertNameReply(reverted=request.name[::-1])


class Time(time_grpc.TimeServicer):
    def WhatTimeIs(self, request, context):
        pause()
        now = time.time()
        return time_pb2.WhatTimeIsReply(
            time=time.strftime("%H:%M:%S", time.gmtime(now)), unix_ms=int(now * 1000)
        )


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--port", type=int, default=0)
    args.add_argument("--metrics-port", type=int, default=0)
    a = args.parse_args()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[PromServerInterceptor(enable_handling_time_histogram=True)],
    )
    revert_grpc.add_RevertNameServicer_to_server(RevertName(), server)
    time_grpc.add_TimeServicer_to_server(Time(), server)
    port = server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    metrics, _ = start_http_server(a.metrics_port, addr="127.0.0.1")
    print(f"ready grpc={port} metrics={metrics.server_port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
