"""A caller hears every RPC the SDK retries (``on_rpc_retry``), from a real gRPC server that fails first."""

from __future__ import annotations

import grpc
import pytest

from filestore.client import AsyncClient, Endpoints, RetryPolicy, TransferOptions
from filestore.client.errors import FilestoreError, Unavailable
from filestore.v1 import metadata_service_pb2, metadata_service_pb2_grpc, resources_pb2


class FlakyMetadata(metadata_service_pb2_grpc.MetadataServiceServicer):
    """GetFile answers UNAVAILABLE ``failures`` times, then the file."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def GetFile(
        self, request: metadata_service_pb2.GetFileRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.File:
        self.calls += 1
        if self.calls <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return resources_pb2.File(id=request.file_id, name="seen.txt")


async def _serve(servicer: FlakyMetadata) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    metadata_service_pb2_grpc.add_MetadataServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _client(address: str, heard: list[tuple[str, str, int]], attempts: int) -> AsyncClient:
    endpoints = Endpoints(upload=address, metadata=address, download=address, token="t")
    options = TransferOptions(retry=RetryPolicy(max_attempts=attempts, base_delay_s=0.0))

    def on_rpc_retry(method: str, error: FilestoreError, attempt: int, delay_s: float) -> None:
        assert delay_s >= 0
        heard.append((method, error.code.name, attempt))

    return AsyncClient(endpoints, options=options, on_rpc_retry=on_rpc_retry)


async def test_each_retried_attempt_is_reported_and_the_call_succeeds() -> None:
    server, address = await _serve(FlakyMetadata(failures=2))
    heard: list[tuple[str, str, int]] = []
    try:
        async with _client(address, heard, attempts=5) as client:
            file = await client.get_file("f-1")
    finally:
        await server.stop(None)
    assert file.id == "f-1"
    assert heard == [("GetFile", "UNAVAILABLE", 1), ("GetFile", "UNAVAILABLE", 2)]


async def test_the_last_attempt_raises_and_is_not_reported_as_a_retry() -> None:
    server, address = await _serve(FlakyMetadata(failures=10))
    heard: list[tuple[str, str, int]] = []
    try:
        async with _client(address, heard, attempts=3) as client:
            with pytest.raises(Unavailable):
                await client.get_file("f-2")
    finally:
        await server.stop(None)
    assert heard == [("GetFile", "UNAVAILABLE", 1), ("GetFile", "UNAVAILABLE", 2)]
