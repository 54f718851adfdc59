"""Upload session tokens against the real stack: SignParts signs from the token with no catalogue
read, the token works only for its caller and its upload, and storage, not the catalogue, refuses
the parts of an upload that has ended (the property the token's safety rests on)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from filestore.client import AsyncClient, Endpoints, TransferOptions
from filestore.client import client as sdk_client
from filestore.core.auth import mint_token
from filestore.core.channels import service_channel
from filestore.core.errors import FailedPrecondition, InvalidArgument, NotFound
from filestore.core.tls import TlsSettings
from filestore.stack import Stack
from filestore.upload import app as upload_app
from filestore.upload.settings import UploadSettings
from filestore.v1 import metadata_service_pb2_grpc, resources_pb2, upload_service_pb2, upload_service_pb2_grpc
from tests.multipart import PART, chunk, complete, create_multipart, put_part
from tests.stacks import broker_env, own_service_tls
from tests.storage import admin_storage
from tests.support import Client, ClientFactory, endpoints_for, fresh_tenant, rpc_error

UState = resources_pb2.UploadState


async def sign(
    client: Client, upload: resources_pb2.Upload, numbers: list[int], *, token: str | None = None
) -> list[resources_pb2.PartUrl]:
    """SignParts with the upload's own session token (or ``token``)."""
    signed = await client.upload.SignParts(
        upload_service_pb2.SignPartsRequest(
            upload_id=upload.id,
            part_numbers=numbers,
            session_token=upload.session_token if token is None else token,
        )
    )
    return list(signed.part_urls)


def no_such_upload(response: httpx.Response) -> bool:
    return response.status_code == 404 and "<Code>NoSuchUpload</Code>" in response.text


async def stored_object(stack: Stack, client: Client, file_id: str) -> bytes:
    got = await asyncio.to_thread(
        admin_storage(stack).get_object,
        Bucket=stack.endpoints.bucket,
        Key=f"originals/{client.tenant}/{file_id}",
    )
    body: bytes = got["Body"].read()
    return body


# ------------------------------------------------- storage refuses the parts of an ended upload


async def test_storage_refuses_parts_of_a_completed_upload(client_for: ClientFactory, stack: Stack) -> None:
    client = client_for(tenant=fresh_tenant())
    body = os.urandom(PART + 11)
    created = await create_multipart(client, body)
    upload = created.upload
    assert upload.session_token
    early = await sign(client, upload, [1, 2])  # signed while the upload was open, used after
    for part in early:
        assert (await put_part(part, chunk(body, upload, part.part_number))).status_code == 200
    done = await complete(client, upload.id)
    assert (done.upload.state, done.upload.session_token) == (UState.UPLOAD_STATE_COMPLETED, "")

    # The token still signs (no catalogue read), but storage takes nothing more for this upload:
    # neither with a fresh URL nor with one signed before the completion.
    late = await sign(client, upload, [1, 2])
    assert no_such_upload(await put_part(late[0], os.urandom(PART)))
    assert no_such_upload(await put_part(late[1], os.urandom(11)))
    assert no_such_upload(await put_part(early[0], os.urandom(PART)))
    assert await stored_object(stack, client, created.file.id) == body
    # Through the catalogue the answer is the one it always was.
    refused = await rpc_error(sign(client, upload, [1], token=""))
    assert (type(refused), refused.reason) == (FailedPrecondition, "UPLOAD_NOT_OPEN")


async def test_storage_refuses_parts_of_an_aborted_upload(client_for: ClientFactory) -> None:
    client = client_for(tenant=fresh_tenant())
    body = os.urandom(PART + 11)
    created = await create_multipart(client, body)
    upload = created.upload
    early = await sign(client, upload, [1])
    assert (await put_part(early[0], chunk(body, upload, 1))).status_code == 200
    aborted = await client.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=upload.id))
    assert (aborted.upload.state, aborted.upload.session_token) == (UState.UPLOAD_STATE_ABORTED, "")

    late = await sign(client, upload, [1, 2])
    assert no_such_upload(await put_part(late[0], chunk(body, upload, 1)))
    assert no_such_upload(await put_part(late[1], chunk(body, upload, 2)))
    assert no_such_upload(await put_part(early[0], chunk(body, upload, 1)))
    refused = await rpc_error(complete(client, upload.id))
    assert (type(refused), refused.reason) == (FailedPrecondition, "UPLOAD_ABORTED")


# ------------------------------------------------------------------ bound to caller and upload


async def test_a_token_works_only_for_its_caller_and_its_upload(client_for: ClientFactory) -> None:
    tenant = fresh_tenant()
    alice, bob = client_for("alice", tenant), client_for("bob", tenant)
    alice_upload = (await create_multipart(alice, os.urandom(PART + 1))).upload
    alice_other = (await create_multipart(alice, os.urandom(PART + 2))).upload
    bob_upload = (await create_multipart(bob, os.urandom(PART + 3))).upload
    token = alice_upload.session_token
    # A token is refused in any hands but its caller's, and for any upload but its own.
    for caller, upload in ((bob, alice_upload), (bob, bob_upload), (alice, alice_other)):
        refused = await rpc_error(sign(caller, upload, [1], token=token))
        assert (type(refused), refused.reason, refused.code) == (
            InvalidArgument,
            "SESSION_TOKEN_INVALID",
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert refused.metadata["upload_id"] == upload.id
    other_tenant = client_for("alice", fresh_tenant())
    refused = await rpc_error(sign(other_tenant, alice_upload, [1], token=token))
    assert refused.reason == "SESSION_TOKEN_INVALID"
    # Without a token another caller meets what it always met: no such upload.
    missing = await rpc_error(sign(bob, alice_upload, [1], token=""))
    assert type(missing) is NotFound
    # Altered anywhere, it is refused.
    for index in (0, len(token) // 2, len(token) - 1):
        altered = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
        refused = await rpc_error(sign(alice, alice_upload, [1], token=altered))
        assert refused.reason == "SESSION_TOKEN_INVALID"
    # GetUpload hands the caller a token too, and both sign the same part the same way.
    again = await alice.upload.GetUpload(upload_service_pb2.GetUploadRequest(upload_id=alice_upload.id))
    assert again.session_token
    [from_get] = await sign(alice, again, [1])
    [from_create] = await sign(alice, alice_upload, [1])
    assert httpx.URL(from_get.request.url).path == httpx.URL(from_create.request.url).path
    assert (from_get.size, from_get.part_number) == (from_create.size, from_create.part_number)
    for upload in (alice_upload, alice_other):
        await alice.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=upload.id))
    await bob.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=bob_upload.id))


async def test_single_uploads_carry_no_token(client_for: ClientFactory) -> None:
    client = client_for(tenant=fresh_tenant())
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(name="a.txt", size=3, content_type="text/plain")
    )
    assert created.upload.session_token == ""


# ------------------------------------------------------------------- no catalogue read at all


class CountingMetadata:
    """The metadata stub the broker is built with, counting each call it makes, by method."""

    def __init__(self, channel: grpc.aio.Channel, calls: dict[str, int]) -> None:
        self._stub = metadata_service_pb2_grpc.MetadataServiceStub(channel)
        self._calls = calls

    def __getattr__(self, method: str) -> Callable[..., Any]:
        call = getattr(self._stub, method)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[method] = self._calls.get(method, 0) + 1
            return call(*args, **kwargs)

        return counted


@pytest.fixture
async def counted_broker(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, dict[str, int], TlsSettings | None]]:
    """A broker of its own, built as the service builds it, whose calls to the metadata service are
    counted: (its address, the counts by method, what a client connects to it with: None, plaintext,
    beside a plaintext stack)."""
    calls: dict[str, int] = {}
    # Only the broker's module sees the counting stub: every other client in the test is left alone.
    stubs = types.SimpleNamespace(MetadataServiceStub=lambda channel: CountingMetadata(channel, calls))
    monkeypatch.setattr(upload_app, "metadata_service_pb2_grpc", stubs)
    with own_service_tls(stack) as (serving, client_tls):
        handle = await upload_app.build(UploadSettings.from_env(broker_env(stack, **serving)))
        await handle.start()
        yield f"127.0.0.1:{handle.port}", calls, client_tls
        await handle.stop(0)


async def test_with_a_token_sign_parts_makes_no_metadata_call(
    stack: Stack, client_for: ClientFactory, counted_broker: tuple[str, dict[str, int], TlsSettings | None]
) -> None:
    address, calls, tls = counted_broker
    tenant = fresh_tenant()
    token = mint_token(stack.endpoints.auth_secret, subject="alice", tenant=tenant)
    async with service_channel(address, token=lambda: token, tls=tls) as channel:
        client = dataclasses.replace(
            client_for("alice", tenant), upload=upload_service_pb2_grpc.UploadServiceStub(channel)
        )
        upload = (await create_multipart(client, os.urandom(40 * PART + 1))).upload
        assert upload.part_count == 41
        calls.clear()
        for number in range(1, 42):
            [part] = await sign(client, upload, [number])
            assert part.part_number == number
        assert len(await sign(client, upload, list(range(1, 42)))) == 41
        assert calls == {}
        # Without the token, one catalogue read per call, as before.
        await sign(client, upload, [1], token="")
        await sign(client, upload, [2], token="")
        assert calls == {"GetUploadRecord": 2}
        await client.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=upload.id))


async def test_an_sdk_upload_reads_the_catalogue_only_to_complete(
    stack: Stack, tmp_path: Path, counted_broker: tuple[str, dict[str, int], TlsSettings | None]
) -> None:
    address, calls, tls = counted_broker
    source = tmp_path / "big.bin"
    body = os.urandom(4 * PART + 5)
    source.write_bytes(body)
    endpoints = endpoints_for(stack)
    endpoints = dataclasses.replace(endpoints, upload=address, tls=tls or endpoints.tls)
    options = TransferOptions(multipart_threshold=PART, part_size=PART, concurrency=2)
    async with AsyncClient(endpoints, options=options, state_dir=tmp_path / "state") as client:
        result = await client.upload(source)
        assert (result.kind, result.parts_sent) == ("multipart", 5)
    # CRC32 part checksums by default: every part signed by SignParts, none from the catalogue.
    assert calls == {
        "BeginUpload": 1,
        "GetUploadRecord": 1,
        "CompleteUploadRecord": 1,
    }
    assert result.file.size == len(body)


async def test_the_sdk_signs_through_the_catalogue_when_its_token_is_refused(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As after the brokers' key changed: the token the SDK holds is not one they accept.
    forgotten: list[str] = []
    fresh = sdk_client._UploadSession

    @dataclasses.dataclass(slots=True)
    class StaleSession(fresh):
        def __post_init__(self) -> None:
            self.token = "A" + self.token[1:] if self.token[:1] != "A" else "B" + self.token[1:]

        def forget(self) -> None:
            forgotten.append(self.token)
            fresh.forget(self)

    monkeypatch.setattr(sdk_client, "_UploadSession", StaleSession)
    source = tmp_path / "big.bin"
    body = os.urandom(2 * PART + 5)
    source.write_bytes(body)
    options = TransferOptions(multipart_threshold=PART, part_size=PART, concurrency=1)
    endpoints: Endpoints = endpoints_for(stack)
    async with AsyncClient(endpoints, options=options, state_dir=tmp_path / "state") as client:
        result = await client.upload(source)
        assert (result.kind, result.parts_sent, result.file.size) == ("multipart", 3, len(body))
    # The three parts make one group, signed in one SignParts: refused once, then signed through
    # the catalogue, and the token forgotten once, not once per part.
    assert len(forgotten) == 1
