"""The shared server bootstrap, on a real gRPC server bound to a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from filestore.core.auth import TokenVerifier, current_principal, mint_token
from filestore.core.channels import insecure_channel, translated_errors
from filestore.core.errors import FailedPrecondition, FilestoreError
from filestore.server.bootstrap import ServerHandle, create_server

SECRET = "t" * 40
SERVICE = "test.Probe"


async def _behave(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    if request == b"domain-error":
        raise FailedPrecondition("not now", reason="NOT_NOW", metadata={"retry_after": "5"})
    if request == b"crash":
        raise RuntimeError("secret internals")
    return current_principal().subject.encode()


def _register(server: grpc.aio.Server) -> list[str]:
    handler = grpc.unary_unary_rpc_method_handler(_behave)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Call": handler})])
    return [SERVICE]


@pytest.fixture
async def handle() -> AsyncIterator[ServerHandle]:
    handle = create_server(
        listen="127.0.0.1:0", domain="test.filestore.v1", verifier=TokenVerifier(SECRET), register=_register
    )
    await handle.start()
    yield handle
    await handle.stop(0)


def _token() -> str:
    return mint_token(SECRET, subject="ann", tenant="acme")


async def _call(port: int, payload: bytes, *, token: str | None = None) -> bytes:
    if token is None:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    else:
        channel = insecure_channel(f"127.0.0.1:{port}", token=lambda: token)
    async with channel:
        method = channel.unary_unary(f"/{SERVICE}/Call")
        with translated_errors():
            result: bytes = await method(payload)
            return result


async def test_an_authenticated_call_runs_as_its_principal(handle: ServerHandle) -> None:
    assert await _call(handle.port, b"hello", token=_token()) == b"ann"


async def test_a_call_without_token_is_unauthenticated(handle: ServerHandle) -> None:
    with pytest.raises(FilestoreError) as caught:
        await _call(handle.port, b"hello")
    assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert (caught.value.reason, caught.value.domain) == ("TOKEN_MISSING", "test.filestore.v1")


async def test_domain_errors_become_a_status_with_error_info(handle: ServerHandle) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await _call(handle.port, b"domain-error", token=_token())
    assert caught.value.reason == "NOT_NOW"
    assert caught.value.metadata == {"retry_after": "5"}


async def test_unexpected_errors_are_internal_and_say_nothing(handle: ServerHandle) -> None:
    with pytest.raises(FilestoreError) as caught:
        await _call(handle.port, b"crash", token=_token())
    assert caught.value.code is grpc.StatusCode.INTERNAL
    assert "secret" not in caught.value.message


async def test_every_rpc_is_logged_with_its_context(handle: ServerHandle) -> None:
    both_logged = asyncio.Event()
    seen: list[str] = []

    def notice(_logger: object, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        # The server logs as the RPC unwinds, which may be just after the client has its answer.
        if event.get("event") == "rpc":
            seen.append(event["status"])
            if len(seen) == 2:
                both_logged.set()
        return event

    with capture_logs(processors=[structlog.contextvars.merge_contextvars, notice]) as logs:
        await _call(handle.port, b"hello", token=_token())
        with pytest.raises(FailedPrecondition):
            await _call(handle.port, b"domain-error", token=_token())
        await asyncio.wait_for(both_logged.wait(), 5)
    rpc_lines = [line for line in logs if line["event"] == "rpc"]
    assert [line["status"] for line in rpc_lines] == ["OK", "FAILED_PRECONDITION"]
    for line in rpc_lines:
        assert line["rpc_method"] == f"/{SERVICE}/Call"
        assert line["principal"] == "ann"
        assert line["request_id"]
        assert line["peer"].startswith("ipv4:127.0.0.1")
        assert line["duration_ms"] >= 0


async def test_health_serves_then_stops_serving_on_shutdown() -> None:
    handle = create_server(
        listen="127.0.0.1:0", domain="test.filestore.v1", verifier=TokenVerifier(SECRET), register=_register
    )
    await handle.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        await handle.health.enter_graceful_shutdown()
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await handle.stop(0)
