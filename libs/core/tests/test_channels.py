"""Channels balance their calls over every address their target resolves to."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from filestore.core.channels import plain_channel


class CountingHealth(health.aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    async def Check(self, request: Any, context: Any) -> Any:
        self.checks += 1
        return await super().Check(request, context)


async def test_calls_spread_over_every_replica_the_target_resolves_to() -> None:
    servicers = [CountingHealth(), CountingHealth()]
    servers, ports = [], []
    for servicer in servicers:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    try:
        # One name, two replicas: what a headless Service's DNS name answers.
        channel = plain_channel(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
        stub: Any = health_pb2_grpc.HealthStub(channel)
        for _ in range(20):
            answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        await channel.close()
    finally:
        for server in servers:
            await server.stop(None)
    # pick_first would have sent all 20 to one of them.
    assert all(servicer.checks > 0 for servicer in servicers), [s.checks for s in servicers]
    assert sum(servicer.checks for servicer in servicers) == 20
