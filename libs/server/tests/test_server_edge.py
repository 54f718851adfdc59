"""The request edge of the shared server bootstrap, on a real gRPC server: the request is decoded and
checked inside the error mapping, after authentication, and errors fit the trailer they travel in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from filestore.core.auth import TokenVerifier, mint_token
from filestore.core.errors import FilestoreError, NotFound, error_from_rpc
from filestore.server.bootstrap import (
    MAX_ERROR_MESSAGE_CHARS,
    MAX_ERROR_METADATA_CHARS,
    ServerHandle,
    create_server,
)
from filestore.v1 import download_service_pb2 as download

SECRET = "e" * 40
SERVICE = "test.Edge"


async def _get(
    request: download.GetDownloadUrlRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> download.DownloadUrl:
    if request.file_id.startswith("missing"):
        # Quotes the request back, as servicers do for ids they cannot find.
        raise NotFound(
            f"no such file {request.file_id}", reason="FILE_NOT_FOUND", metadata={"file_id": request.file_id}
        )
    return download.DownloadUrl(file_id=request.file_id)


def _register(server: grpc.aio.Server) -> list[str]:
    handler = grpc.unary_unary_rpc_method_handler(
        _get,
        request_deserializer=download.GetDownloadUrlRequest.FromString,
        response_serializer=download.DownloadUrl.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Get": handler})])
    return [SERVICE]


@pytest.fixture
async def handle() -> AsyncIterator[ServerHandle]:
    handle = create_server(
        listen="127.0.0.1:0", domain="edge.filestore.v1", verifier=TokenVerifier(SECRET), register=_register
    )
    await handle.start()
    yield handle
    await handle.stop(0)


async def _call(handle: ServerHandle, payload: bytes, *, token: str | None = "ann") -> bytes | FilestoreError:
    metadata = (
        ()
        if token is None
        else (("authorization", f"Bearer {mint_token(SECRET, subject=token, tenant='acme')}"),)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        try:
            answer: bytes = await channel.unary_unary(f"/{SERVICE}/Get")(payload, metadata=metadata)
        except grpc.RpcError as error:
            return error_from_rpc(error)
        return answer


async def test_a_valid_request_reaches_the_servicer_decoded(handle: ServerHandle) -> None:
    answer = await _call(handle, download.GetDownloadUrlRequest(file_id="f-1").SerializeToString())
    assert isinstance(answer, bytes)
    assert download.DownloadUrl.FromString(answer).file_id == "f-1"


@pytest.mark.parametrize(
    "payload",
    [b"\x0a\x02\xff\xfe", b"\x0a\x09short", b"\xff\xff\xff"],
    ids=["string-not-utf8", "length-past-the-end", "tag-never-ends"],
)
async def test_a_request_that_does_not_decode_is_invalid_argument(
    handle: ServerHandle, payload: bytes
) -> None:
    error = await _call(handle, payload)
    assert isinstance(error, FilestoreError)
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        "edge.filestore.v1",
    )


async def test_the_token_is_checked_before_the_request_is_read(handle: ServerHandle) -> None:
    error = await _call(handle, b"\xff\xff\xff", token=None)
    assert isinstance(error, FilestoreError)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")


async def test_a_decoded_request_is_checked_before_the_servicer(handle: ServerHandle) -> None:
    request = download.GetDownloadUrlRequest(file_id="missing", disposition=9)  # type: ignore[arg-type]
    error = await _call(handle, request.SerializeToString())
    assert isinstance(error, FilestoreError)
    assert (error.reason, error.metadata) == ("INVALID_ENUM_VALUE", {"field": "disposition", "value": "9"})


async def test_an_error_quoting_a_huge_request_still_arrives_whole(handle: ServerHandle) -> None:
    """A 100 KB id quoted in the message and the ErrorInfo once overflowed the trailer: the caller
    saw RESOURCE_EXHAUSTED instead of the error."""
    huge = "missing" + "x" * 100_000
    error = await _call(handle, download.GetDownloadUrlRequest(file_id=huge).SerializeToString())
    assert isinstance(error, FilestoreError)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "FILE_NOT_FOUND")
    assert len(error.message) <= MAX_ERROR_MESSAGE_CHARS
    assert len(error.metadata["file_id"]) == MAX_ERROR_METADATA_CHARS
    assert error.metadata["file_id"].startswith("missingxxx")
