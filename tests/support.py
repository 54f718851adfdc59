"""The stack as the integration tests use it from the outside: users of a tenant with their stubs,
the typed error a call failed with, the FileStatusChanged events they wait on, and the client-side
steps of an upload."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import httpx
import nats
import pytest
from nats.aio.msg import Msg

from filestore.client import Endpoints
from filestore.core.auth import mint_token
from filestore.core.channels import plain_channel, service_channel
from filestore.core.errors import FilestoreError, error_from_rpc
from filestore.stack import Stack, StackEndpoints
from filestore.v1 import (
    download_service_pb2_grpc,
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)


@dataclass(frozen=True)
class Client:
    """The four services as one user of one tenant sees them."""

    subject: str
    tenant: str
    upload: upload_service_pb2_grpc.UploadServiceAsyncStub
    metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub
    processor: processor_service_pb2_grpc.ProcessorServiceAsyncStub
    download: download_service_pb2_grpc.DownloadServiceAsyncStub


class ClientFactory(Protocol):
    def __call__(self, subject: str = ..., tenant: str = ...) -> Client: ...


class StackClients:
    """A ClientFactory for one stack: ``clients(subject, tenant)`` is a Client whose calls carry that
    user's token; ``close()`` closes the channels of every Client it made."""

    def __init__(self, stack: Stack) -> None:
        self._endpoints = stack.endpoints
        self._channels: list[grpc.aio.Channel] = []

    def __call__(self, subject: str = "alice", tenant: str = "acme") -> Client:
        endpoints = self._endpoints
        token = mint_token(endpoints.auth_secret, subject=subject, tenant=tenant)

        def channel(address: str) -> grpc.aio.Channel:
            opened = stack_channel(endpoints, address, token=lambda: token)
            self._channels.append(opened)
            return opened

        return Client(
            subject=subject,
            tenant=tenant,
            upload=upload_service_pb2_grpc.UploadServiceStub(channel(endpoints.upload_addr)),
            metadata=metadata_service_pb2_grpc.MetadataServiceStub(channel(endpoints.metadata_addr)),
            processor=processor_service_pb2_grpc.ProcessorServiceStub(channel(endpoints.processor_addr)),
            download=download_service_pb2_grpc.DownloadServiceStub(channel(endpoints.download_addr)),
        )

    async def close(self) -> None:
        for opened in self._channels:
            await opened.close()


def stack_channel(endpoints: StackEndpoints, address: str, *, token: Callable[[], str]) -> grpc.aio.Channel:
    """A channel to one of the stack's services as its clients open one: with the stack's CA and the
    users' client certificate when it runs on TLS (the compose stack: mutual TLS), else plaintext."""
    return service_channel(address, token=token, tls=endpoints.tls)


def bare_channel(endpoints: StackEndpoints, address: str) -> grpc.aio.Channel:
    """A channel to one of the stack's services that sends no token (TLS as :func:`stack_channel`)."""
    return plain_channel(address, tls=endpoints.tls)


async def connect_nats(endpoints: StackEndpoints) -> nats.aio.client.Client:
    """The stack's NATS, with its CA and the users' client certificate when it runs on TLS."""
    tls = endpoints.tls.client_context() if endpoints.tls is not None else None
    return await nats.connect(endpoints.nats_url, tls=tls)


def service_token(stack: Stack) -> str:
    """A token as the Filestore services carry theirs: the service role, any tenant."""
    return mint_token(stack.endpoints.auth_secret, subject="service:test", tenant="*", roles=["service"])


def fresh_tenant() -> str:
    """A tenant no other test uses, so counts and listings see only what the test made."""
    return f"t-{uuid.uuid4().hex[:12]}"


def endpoints_for(stack: Stack, *, tenant: str | None = None, subject: str = "alice") -> Endpoints:
    """What the SDK needs to reach the stack as ``subject`` of ``tenant`` (by default a fresh one)."""
    e = stack.endpoints
    token = mint_token(e.auth_secret, subject=subject, tenant=tenant or fresh_tenant())
    return Endpoints(
        upload=e.upload_addr, metadata=e.metadata_addr, download=e.download_addr, token=token, tls=e.tls
    )


async def rpc_error(call: Awaitable[object]) -> FilestoreError:
    """The typed error a call failed with (reason, domain and metadata from its ErrorInfo)."""
    try:
        await call
    except grpc.RpcError as error:
        return error_from_rpc(error)
    pytest.fail("the call succeeded but was expected to fail")


READY_TIMEOUT_S = 60.0
#: The subject every status change of a file is announced on.
STATUS_SUBJECT = "files.file.ready"


class StatusEvents:
    """Collects FileStatusChanged events from NATS, so tests wait on the real event, not on sleeps."""

    def __init__(self) -> None:
        self._seen: dict[str, events_pb2.FileStatusChanged] = {}
        self._changed = asyncio.Condition()

    async def on_message(self, message: Msg) -> None:
        event = events_pb2.FileStatusChanged.FromString(message.data)
        async with self._changed:
            self._seen[event.file_id] = event
            self._changed.notify_all()

    async def wait_for(self, file_id: str) -> events_pb2.FileStatusChanged:
        async def seen() -> events_pb2.FileStatusChanged:
            async with self._changed:
                await self._changed.wait_for(lambda: file_id in self._seen)
                return self._seen[file_id]

        return await asyncio.wait_for(seen(), READY_TIMEOUT_S)

    async def wait_for_status(
        self, file_id: str, status: resources_pb2.FileStatus.ValueType
    ) -> events_pb2.FileStatusChanged:
        """The file's latest event once it announces ``status`` (a file can change more than once)."""

        async def seen() -> events_pb2.FileStatusChanged:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: file_id in self._seen and self._seen[file_id].status == status
                )
                return self._seen[file_id]

        return await asyncio.wait_for(seen(), READY_TIMEOUT_S)


@asynccontextmanager
async def collected_status_events(stack: Stack) -> AsyncIterator[StatusEvents]:
    """The stack's FileStatusChanged events, collected from NATS while the block runs."""
    collector = StatusEvents()
    connection = await connect_nats(stack.endpoints)
    try:
        await connection.subscribe(STATUS_SUBJECT, cb=collector.on_message)
        await connection.flush()
        yield collector
    finally:
        await connection.close()


async def put_presigned(
    request: resources_pb2.PresignedRequest, body: bytes, **header_overrides: str
) -> httpx.Response:
    """The client side of an upload: plain HTTP, no credentials, only what the broker handed out."""
    headers = {**request.headers, **header_overrides}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.put(request.url, content=body, headers=headers)


async def post_form(request: resources_pb2.PresignedRequest, body: bytes, **overrides: str) -> httpx.Response:
    """A browser form submit: the signed fields, then the file, no credentials."""
    fields = {**request.form_fields, **overrides}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            request.url, data=fields, files={"file": ("photo.png", body, fields["Content-Type"])}
        )


async def create_upload(
    client: Client,
    body: bytes,
    *,
    name: str = "report.pdf",
    content_type: str = "application/pdf",
    declare_sha256: bool = True,
) -> upload_service_pb2.CreateUploadResponse:
    response: upload_service_pb2.CreateUploadResponse = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name=name,
            size=len(body),
            content_type=content_type,
            sha256=hashlib.sha256(body).hexdigest() if declare_sha256 else "",
        )
    )
    return response


async def complete_upload(client: Client, upload_id: str) -> upload_service_pb2.CompleteUploadResponse:
    response: upload_service_pb2.CompleteUploadResponse = await client.upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=upload_id)
    )
    return response


async def get_file(client: Client, file_id: str) -> resources_pb2.File:
    file: resources_pb2.File = await client.metadata.GetFile(
        metadata_service_pb2.GetFileRequest(file_id=file_id)
    )
    return file


async def upload_file(
    client: Client,
    body: bytes,
    *,
    name: str = "report.pdf",
    content_type: str = "application/pdf",
) -> resources_pb2.File:
    """Create, PUT, complete: the file as CompleteUpload answers it, before the processor's verdict."""
    created = await create_upload(client, body, name=name, content_type=content_type)
    response = await put_presigned(created.upload.request, body)
    assert response.status_code == 200, response.text
    completed = await complete_upload(client, created.upload.id)
    file: resources_pb2.File = completed.file
    return file


async def upload_until_processed(
    client: Client,
    status_events: StatusEvents,
    body: bytes,
    *,
    name: str = "report.pdf",
    content_type: str = "application/pdf",
) -> resources_pb2.File:
    """Create, PUT, complete, and wait for the processor's verdict; answers the file as it ended."""
    uploaded = await upload_file(client, body, name=name, content_type=content_type)
    await status_events.wait_for(uploaded.id)
    return await get_file(client, uploaded.id)


def free_port() -> int:
    """A loopback port free right now, for a process a test starts beside the stack."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_path(
    path: Path, process: subprocess.Popen[Any], *, timeout_s: float, output: Callable[[], str]
) -> None:
    """Wait until ``process`` (a stack started as a command) has written ``path``; fail with the tail
    of its ``output`` if it exits first, or if ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, f"{process.args!r} exited early: {output()[-3000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout_s} s"
        time.sleep(0.2)
