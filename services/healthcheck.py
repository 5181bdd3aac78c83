"""`python -m services.healthcheck HOST:PORT`: exit 0 when a gRPC server reports SERVING.

For container health checks, where neither grpcurl nor grpc_health_probe is installed. With
DISCOVERY_TLS_* set it dials as the service itself does (mutual TLS).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from discovery_client.channel import channel
from discovery_client.settings import tls_from_env
from services.envconfig import ConfigError


def main(target: str) -> int:
    try:
        tls = tls_from_env(os.environ)
    except ConfigError as exc:
        print(f"bad configuration: {exc}", file=sys.stderr)
        return 2
    with channel(target, tls) as opened:
        try:
            reply = health_pb2_grpc.HealthStub(opened).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name}", file=sys.stderr)
            return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"))
