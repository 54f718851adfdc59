"""Calls to dependencies are bounded and a dependency that does not answer is reported by name: real
gRPC servers on free ports, and for storage a socket that accepts connections and never answers (as a
stopped process does: the kernel completes the handshake, nobody reads)."""

from __future__ import annotations

import asyncio
import contextvars
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest

from filestore.core.auth import TokenVerifier, mint_token
from filestore.core.channels import insecure_channel, translated_errors
from filestore.core.errors import FilestoreError, Unavailable
from filestore.server import deadlines
from filestore.server.bootstrap import ServerHandle, create_server
from filestore.server.dependencies import METADATA, dependency_channel
from filestore.server.storage import ObjectStore, StoreConfig, StoreCredentials

SECRET = "d" * 40
SERVICE = "test.Dependency"
#: A bound on every call a test makes, so that a call that hangs fails the test instead of stalling it.
HANG_S = 30.0


def _token() -> str:
    return mint_token(SECRET, subject="svc", tenant="*", roles=["service"])


Behaviour = Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]


async def _serve(behaviour: Behaviour) -> ServerHandle:
    def register(server: grpc.aio.Server) -> list[str]:
        handler = grpc.unary_unary_rpc_method_handler(behaviour)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Call": handler})])
        return [SERVICE]

    handle = create_server(
        listen="127.0.0.1:0", domain="test.filestore.v1", verifier=TokenVerifier(SECRET), register=register
    )
    await handle.start()
    return handle


async def _hang(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """A service that is up but never answers (stopped, or stuck)."""
    await asyncio.Event().wait()
    return b""


async def _busy(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise Unavailable("try later", reason="BUSY_ELSEWHERE")


@pytest.fixture
async def hanging() -> AsyncIterator[ServerHandle]:
    handle = await _serve(_hang)
    yield handle
    await handle.stop(0)


async def _call(channel: grpc.aio.Channel, *, deadline_s: float | None = None) -> bytes:
    method = channel.unary_unary(f"/{SERVICE}/Call")
    with translated_errors():
        answer: bytes = await method(b"", timeout=deadline_s)
        return answer


async def _failure(call: Awaitable[object]) -> FilestoreError:
    try:
        await asyncio.wait_for(call, HANG_S)
    except FilestoreError as error:
        return error
    pytest.fail("the call answered")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------------------------ deadlines


def _in_fresh_context(check: Callable[[], None]) -> None:
    contextvars.Context().run(check)


def test_outside_an_rpc_a_call_gets_its_own_timeout() -> None:
    def check() -> None:
        assert deadlines.call_timeout(5.0) == 5.0
        assert deadlines.call_timeout(None) is None
        deadlines.serving(None)  # an RPC without a deadline bounds nothing either
        assert deadlines.call_timeout(5.0) == 5.0

    _in_fresh_context(check)


def test_while_serving_a_call_ends_before_the_inbound_deadline() -> None:
    def check() -> None:
        deadlines.serving(30.0)
        assert deadlines.call_timeout(10.0) == 10.0
        unbounded = deadlines.call_timeout(None)
        assert unbounded is not None
        assert 28.0 <= unbounded < 30.0 - deadlines.MIN_MARGIN_S
        deadlines.serving(2.0)
        hurried = deadlines.call_timeout(10.0)
        assert hurried is not None
        assert 1.5 < hurried < 2.0
        deadlines.serving(-1.0)  # the caller has gone already
        assert deadlines.call_timeout(10.0) == 0.0
        deadlines.outside_rpc()
        assert deadlines.call_timeout(10.0) == 10.0

    _in_fresh_context(check)


# ------------------------------------------------------------------------------------ gRPC


async def test_a_dependency_that_does_not_answer_is_unavailable_by_name(hanging: ServerHandle) -> None:
    async with dependency_channel(
        f"127.0.0.1:{hanging.port}", token=_token, dependency=METADATA, timeout_s=0.5
    ) as channel:
        error = await _failure(_call(channel))
    assert isinstance(error, Unavailable)
    assert error.reason == "METADATA_UNAVAILABLE"


async def test_a_dependency_that_is_down_is_unavailable_by_name() -> None:
    async with dependency_channel(
        f"127.0.0.1:{_closed_port()}", token=_token, dependency=METADATA, timeout_s=5.0
    ) as channel:
        error = await _failure(_call(channel))
    assert isinstance(error, Unavailable)
    assert error.reason == "METADATA_UNAVAILABLE"


async def test_a_dependency_answering_unavailable_itself_keeps_its_reason() -> None:
    handle = await _serve(_busy)
    try:
        async with dependency_channel(
            f"127.0.0.1:{handle.port}", token=_token, dependency=METADATA, timeout_s=5.0
        ) as channel:
            error = await _failure(_call(channel))
    finally:
        await handle.stop(0)
    assert isinstance(error, Unavailable)
    assert (error.reason, error.domain) == ("BUSY_ELSEWHERE", "test.filestore.v1")


async def test_a_channel_without_a_dependency_adds_no_deadline(hanging: ServerHandle) -> None:
    """The SDK's channels: the caller's own deadline (here none but the test's) decides."""
    async with insecure_channel(f"127.0.0.1:{hanging.port}", token=_token) as channel:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_call(channel), 1.0)


async def test_a_call_made_while_serving_ends_before_the_callers_deadline(hanging: ServerHandle) -> None:
    """The front service's own timeout (60 s) is longer than its caller's deadline (2 s): the caller
    still hears that the dependency did not answer, not its own DEADLINE_EXCEEDED."""
    behind = dependency_channel(
        f"127.0.0.1:{hanging.port}", token=_token, dependency=METADATA, timeout_s=60.0
    )

    async def front_behaviour(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return await _call(behind)

    front = await _serve(front_behaviour)
    try:
        async with insecure_channel(f"127.0.0.1:{front.port}", token=_token) as channel:
            error = await _failure(_call(channel, deadline_s=2.0))
    finally:
        await front.stop(0)
        await behind.close()
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert (error.reason, error.domain) == ("METADATA_UNAVAILABLE", "test.filestore.v1")


# ------------------------------------------------------------------------------------ storage


@pytest.fixture
def silent_storage() -> Iterator[str]:
    """An endpoint that accepts connections and never answers; closed afterwards, which resets the
    connections still waiting (so no worker thread outlives the test by long)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _store(endpoint: str, *, control_timeout_s: float) -> ObjectStore:
    return ObjectStore(
        StoreConfig(
            name="silent",
            endpoint=endpoint,
            public_endpoint=endpoint,
            region="us-east-1",
            bucket="bucket",
            credentials=StoreCredentials("access", "secret"),
            control_timeout_s=control_timeout_s,
        )
    )


async def test_storage_that_does_not_answer_is_storage_unavailable(silent_storage: str) -> None:
    store = _store(silent_storage, control_timeout_s=0.3)
    error = await _failure(store.head("some/key"))
    assert isinstance(error, Unavailable)
    assert error.reason == "STORAGE_UNAVAILABLE"
    assert "some/key" in error.message


async def test_a_storage_call_made_while_serving_ends_before_the_callers_deadline(
    silent_storage: str,
) -> None:
    # Two attempts of 5 s each would outlast the caller's deadline of 2 s.
    store = _store(silent_storage, control_timeout_s=5.0)

    async def front_behaviour(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await store.head("some/key")
        return b""

    front = await _serve(front_behaviour)
    try:
        async with insecure_channel(f"127.0.0.1:{front.port}", token=_token) as channel:
            error = await _failure(_call(channel, deadline_s=2.0))
    finally:
        await front.stop(0)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.reason == "STORAGE_UNAVAILABLE"
