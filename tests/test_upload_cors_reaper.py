"""The broker's bucket CORS rules and the reaper of expired uploads, against the real stack."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest

from filestore.core.env import SettingsError
from filestore.core.keys import original_key
from filestore.server.storage import ObjectStore
from filestore.stack import Stack
from filestore.upload.app import build
from filestore.upload.reaper import Reaper
from filestore.upload.settings import UploadSettings
from filestore.v1 import metadata_service_pb2, metadata_service_pb2_grpc, resources_pb2
from tests.catalogue import timestamp
from tests.stacks import broker_env
from tests.storage import admin_storage, admin_store, bucket_cors_kept
from tests.support import service_token, stack_channel

APP = "https://app.example.com"


async def preflight(stack: Stack, origin: str, method: str = "PUT") -> httpx.Response:
    """What a browser sends before a cross-origin PUT of a part."""
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.options(
            f"{stack.endpoints.s3_endpoint}/{stack.endpoints.bucket}/originals/t/f",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type,x-amz-checksum-sha256",
            },
        )


def allowed(response: httpx.Response, origin: str) -> bool:
    return response.status_code == 200 and response.headers.get("access-control-allow-origin") == origin


@pytest.fixture
async def s3_store(stack: Stack) -> AsyncIterator[ObjectStore]:
    async with bucket_cors_kept(stack):
        yield admin_store(stack)


async def test_by_default_no_origin_may_upload_cross_origin(stack: Stack) -> None:
    # The stack's broker applied its origin list at start (the test pages' origin only), so no other.
    for origin in (APP, "https://evil.example", "null"):
        assert not allowed(await preflight(stack, origin), origin)


async def test_a_broker_applies_configured_origins_at_start(stack: Stack, s3_store: ObjectStore) -> None:
    handle = await build(UploadSettings.from_env(broker_env(stack, FILESTORE_CORS_ORIGINS=APP)))
    try:
        answer = await preflight(stack, APP)
        assert allowed(answer, APP)
        assert "etag" in answer.headers["access-control-expose-headers"].lower()
        assert "PUT" in answer.headers["access-control-allow-methods"]
        assert allowed(await preflight(stack, APP, "POST"), APP)
        assert not allowed(await preflight(stack, "https://evil.example"), "https://evil.example")
        # SeaweedFS 4.48 answers a DELETE preflight from an allowed origin too, but never lists
        # DELETE as allowed (and a DELETE would need storage credentials anyway).
        deleting = await preflight(stack, APP, "DELETE")
        assert "DELETE" not in deleting.headers.get("access-control-allow-methods", "")
    finally:
        await handle.stop(0)


@pytest.mark.parametrize("origins", ["*", "https://*.example.com", "https://app.example.com/path"])
def test_wildcard_or_malformed_origins_stop_the_broker(stack: Stack, origins: str) -> None:
    with pytest.raises(SettingsError, match="FILESTORE_CORS_ORIGINS"):
        UploadSettings.from_env(broker_env(stack, FILESTORE_CORS_ORIGINS=origins))


def _service_metadata(
    stack: Stack,
) -> tuple[grpc.aio.Channel, metadata_service_pb2_grpc.MetadataServiceAsyncStub]:
    token = service_token(stack)
    channel = stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token)
    return channel, metadata_service_pb2_grpc.MetadataServiceStub(channel)


#: Long enough to create six uploads with their bytes before their sessions end.
SETUP_S = timedelta(seconds=5)


async def _expiring_upload(
    metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    store: ObjectStore,
    stack: Stack,
    tenant: str,
    *,
    multipart: bool,
    expires: datetime,
) -> metadata_service_pb2.UploadRecord:
    """An upload whose session ends at ``expires``, with bytes in storage (a part, or a partial
    object) for the reaper to clean up, made as the broker makes it. Not already expired: the stack's
    own broker runs a reaper, which could end the upload before its bytes are there."""
    client = admin_storage(stack)
    file_id = str(uuid.uuid4())
    storage_upload_id = (
        await store.create_multipart(original_key(tenant, file_id), content_type="application/octet-stream")
        if multipart
        else ""
    )
    began = await metadata.BeginUpload(
        metadata_service_pb2.BeginUploadRequest(
            file=resources_pb2.File(
                tenant=tenant,
                owner="gina",
                name="x.bin",
                declared_content_type="application/octet-stream",
                size=6,
            ),
            kind=resources_pb2.UPLOAD_KIND_MULTIPART if multipart else resources_pb2.UPLOAD_KIND_SINGLE,
            part_size=5 * 1024**2 if multipart else 0,
            part_count=1 if multipart else 0,
            expire_time=timestamp(expires),
            file_id=file_id,
            storage_upload_id=storage_upload_id,
        )
    )
    record = began.upload
    assert record.storage_key == original_key(tenant, file_id)
    if multipart:
        await asyncio.to_thread(
            client.upload_part,
            Bucket=stack.endpoints.bucket,
            Key=record.storage_key,
            UploadId=storage_upload_id,
            PartNumber=1,
            Body=b"abc",
        )
    else:
        await asyncio.to_thread(
            client.put_object,
            Bucket=stack.endpoints.bucket,
            Key=record.storage_key,
            Body=b"abc",
        )
    return record


async def test_two_reapers_racing_reap_each_expired_upload_exactly_once(
    stack: Stack, s3_store: ObjectStore
) -> None:
    tenant = f"reap-{os.urandom(4).hex()}"
    channels = [_service_metadata(stack) for _ in range(3)]
    try:
        setup = channels[0][1]
        expires = datetime.now(UTC) + SETUP_S
        records = [
            await _expiring_upload(setup, s3_store, stack, tenant, multipart=i % 2 == 0, expires=expires)
            for i in range(6)
        ]
        # Made before they expire (see _expiring_upload); the race starts once they all have.
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
        ours = {record.id for record in records}
        reapers = [Reaper(metadata=stub, store=s3_store, batch=4, lease_s=60) for _, stub in channels[1:]]
        # Each reaper runs passes until it finds nothing more, both at once.
        results = await asyncio.gather(*(_drain(reaper) for reaper in reapers))
        first, second = ({i for i in reaped if i in ours} for reaped in results)
        assert not first & second  # nobody reaped an upload twice
        # The stack's own broker runs a reaper too; anything neither of ours took, it took.
        for record in records:
            ended = await setup.GetUploadRecord(
                metadata_service_pb2.GetUploadRecordRequest(upload_id=record.id, tenant=tenant)
            )
            assert ended.state == resources_pb2.UPLOAD_STATE_EXPIRED
            file = await setup.GetFile(
                metadata_service_pb2.GetFileRequest(
                    file_id=record.file_id, tenant=tenant, include_deleted=True
                )
            )
            assert file.status == resources_pb2.FILE_STATUS_DELETED
            assert await s3_store.head(record.storage_key) is None
            if record.storage_upload_id:
                assert await s3_store.list_parts(record.storage_key, record.storage_upload_id) is None
        assert len(first | second) >= 1
        # Nothing is left to claim: a later pass reaps none of them again.
        assert not set(await reapers[0].reap_once()) & ours
    finally:
        for channel, _ in channels:
            await channel.close()


async def _drain(reaper: Reaper) -> list[str]:
    reaped: list[str] = []
    while batch := await reaper.reap_once():
        reaped.extend(batch)
    return reaped
