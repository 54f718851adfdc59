"""The real stack as a session fixture: SeaweedFS, NATS and the four services as local processes on
free ports in a temp dir, with the metadata database on SQLite and again on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg
import grpc
import nats
import pytest
from nats.aio.msg import Msg
from sqlalchemy.engine import make_url

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.errors import FilestoreError, error_from_rpc
from filestore.stack import SERVICES, Stack, StackConfig, StackPorts
from filestore.v1 import (
    download_service_pb2_grpc,
    events_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2_grpc,
)
from tests.external_stack import external_stack_from_env

DEFAULT_TEST_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
#: `make test-stack`: a running stack named by FILESTORE_STACK_JSON or FILESTORE_EXTERNAL_* (see
#: tests/external_stack.py); None when each session starts its own.
EXTERNAL_STACK = external_stack_from_env(os.environ)


@asynccontextmanager
async def scratch_postgres_database() -> AsyncIterator[str]:
    """A database of its own on the local PostgreSQL server (TEST_DATABASE_URL), dropped afterwards."""
    base = make_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    name = f"filestore_it_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database=base.database,
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(
    scope="session", params=["external"] if EXTERNAL_STACK is not None else ["sqlite", "postgresql"]
)
async def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    if EXTERNAL_STACK is not None:
        yield EXTERNAL_STACK
        return
    async with AsyncExitStack() as resources:
        database_url = None
        if request.param == "postgresql":
            database_url = await resources.enter_async_context(scratch_postgres_database())
        home: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
        config = StackConfig(
            home=home,
            ports=StackPorts.free(),
            database_url=database_url,
            ready_timeout_s=60.0,
            extra_env=traced_services(home),
        )
        yield await resources.enter_async_context(Stack(config))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "local_stack: starts, stops or inspects stack processes itself; not for `make test-stack`"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against an external stack, run only the tests that use it (the `stack` fixture) and need
    nothing but its endpoints; the others start stacks of their own or control its processes."""
    if EXTERNAL_STACK is None:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        uses_it = "stack" in getattr(item, "fixturenames", ())
        (keep if uses_it and item.get_closest_marker("local_stack") is None else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def traced_services(home: Path) -> dict[str, dict[str, str]]:
    """Every service writes its spans as JSON lines to ``home/traces/<service>.jsonl``: cheap, and
    what test_observability reads to follow one upload's trace across the services."""
    return {
        service: {
            "FILESTORE_TRACING_EXPORTER": "file",
            "FILESTORE_TRACING_FILE": str(home / "traces" / f"{service}.jsonl"),
        }
        for service in SERVICES
    }


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


@pytest.fixture
async def client_for(stack: Stack) -> AsyncIterator[ClientFactory]:
    """``client_for(subject, tenant)`` builds a Client whose calls carry that user's token."""
    channels: list[grpc.aio.Channel] = []
    endpoints = stack.endpoints

    def make(subject: str = "alice", tenant: str = "acme") -> Client:
        token = mint_token(endpoints.auth_secret, subject=subject, tenant=tenant)

        def channel(address: str) -> grpc.aio.Channel:
            opened = insecure_channel(address, token=lambda: token)
            channels.append(opened)
            return opened

        return Client(
            subject=subject,
            tenant=tenant,
            upload=upload_service_pb2_grpc.UploadServiceStub(channel(endpoints.upload_addr)),
            metadata=metadata_service_pb2_grpc.MetadataServiceStub(channel(endpoints.metadata_addr)),
            processor=processor_service_pb2_grpc.ProcessorServiceStub(channel(endpoints.processor_addr)),
            download=download_service_pb2_grpc.DownloadServiceStub(channel(endpoints.download_addr)),
        )

    yield make
    for opened in channels:
        await opened.close()


async def rpc_error(call: Awaitable[object]) -> FilestoreError:
    """The typed error a call failed with (reason, domain and metadata from its ErrorInfo)."""
    try:
        await call
    except grpc.RpcError as error:
        return error_from_rpc(error)
    pytest.fail("the call succeeded but was expected to fail")


READY_TIMEOUT_S = 60.0


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


@pytest.fixture
async def status_events(stack: Stack) -> AsyncIterator[StatusEvents]:
    collector = StatusEvents()
    connection = await nats.connect(stack.endpoints.nats_url)
    await connection.subscribe("files.file.ready", cb=collector.on_message)
    await connection.flush()
    yield collector
    await connection.close()
