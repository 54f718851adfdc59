"""``filestore-healthcheck HOST:PORT [SERVICE]``: exit 0 when the gRPC health check says SERVING.

For container health checks and scripts; no token is needed for the health service.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", *, timeout_s: float = 3.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            # types-grpcio-health-checking declares HealthStub without its methods.
            stub: Any = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    if len(sys.argv) not in (2, 3):
        print("usage: filestore-healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        raise SystemExit(2)
    serving = check(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "")
    print("SERVING" if serving else "NOT_SERVING")
    raise SystemExit(0 if serving else 1)


if __name__ == "__main__":
    main()
