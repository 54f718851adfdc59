"""Stores and regions against a real stack with two SeaweedFS instances (FILESTORE_STACK_REGIONS=2):
placement by residency, by the client's hint and by default; residency never violated (uploads,
multipart, dedup, replicas, derivatives); downloads signed for the store that holds the file (the
nearest replica by the caller's hint); replication and its repair by the reconciler, which checks
each record in the store it names.

One stack for the module (SQLite): every test uses a tenant of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from filestore.metadata.fsck.reconciler import run as run_reconciler
from filestore.metadata.fsck.report import FindingKind, Resolution
from filestore.stack import Stack
from filestore.stack.regions import SECOND_REGION, SECOND_STORE
from filestore.v1 import (
    download_service_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
)
from tests.regions import DEFAULT, reconciler_options, storage_of, two_region_stack
from tests.support import (
    Client,
    StackClients,
    StatusEvents,
    collected_status_events,
    complete_upload,
    fresh_tenant,
    get_file,
    put_presigned,
    rpc_error,
    service_token,
    stack_channel,
)

pytestmark = pytest.mark.local_stack

HOME_REGION = "us-east-1"


@pytest.fixture(scope="module")
async def two_regions(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with two_region_stack(tmp_path_factory.mktemp("stack-regions")) as stack:
        yield stack


@pytest.fixture(scope="module")
async def clients(two_regions: Stack) -> AsyncIterator[StackClients]:
    made = StackClients(two_regions)
    yield made
    await made.close()


@pytest.fixture(scope="module")
async def admin_metadata(
    two_regions: Stack,
) -> AsyncIterator[metadata_service_pb2_grpc.MetadataServiceAsyncStub]:
    token = service_token(two_regions)
    channel = stack_channel(two_regions.endpoints, two_regions.endpoints.metadata_addr, token=lambda: token)
    yield metadata_service_pb2_grpc.MetadataServiceStub(channel)
    await channel.close()


@pytest.fixture
async def status_events(two_regions: Stack) -> AsyncIterator[StatusEvents]:
    async with AsyncExitStack() as resources:
        yield await resources.enter_async_context(collected_status_events(two_regions))


async def holds(stack: Stack, store: str, key: str) -> bool:
    client, bucket = storage_of(stack, store)
    try:
        await asyncio.to_thread(client.head_object, Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def endpoint_of(stack: Stack, store: str) -> str:
    return (stack if store == DEFAULT else stack.regions[0]).endpoints.s3_endpoint


async def set_policy(
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    tenant: str,
    *stores: str,
    replicate: bool = False,
) -> metadata_service_pb2.StoragePolicy:
    policy: metadata_service_pb2.StoragePolicy = await admin.SetStoragePolicy(
        metadata_service_pb2.SetStoragePolicyRequest(
            policy=metadata_service_pb2.StoragePolicy(
                tenant=tenant, allowed_stores=stores, replicate=replicate
            )
        )
    )
    return policy


async def create(
    client: Client,
    body: bytes,
    *,
    content_type: str = "application/pdf",
    preferred_region: str = "",
    rtts: dict[str, int] | None = None,
    kind: resources_pb2.UploadKind.ValueType = resources_pb2.UPLOAD_KIND_UNSPECIFIED,
) -> upload_service_pb2.CreateUploadResponse:
    response: upload_service_pb2.CreateUploadResponse = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name="report.pdf",
            size=len(body),
            content_type=content_type,
            sha256=hashlib.sha256(body).hexdigest(),
            kind=kind,
            preferred_region=preferred_region,
            store_rtts=[resources_pb2.StoreRtt(store=name, rtt_ms=ms) for name, ms in (rtts or {}).items()],
        )
    )
    return response


async def upload_processed(
    client: Client, events: StatusEvents, body: bytes, **hints: object
) -> resources_pb2.File:
    created = await create(client, body, **hints)  # type: ignore[arg-type]
    assert (await put_presigned(created.upload.request, body)).status_code == 200
    await complete_upload(client, created.upload.id)
    await events.wait_for(created.file.id)
    return await get_file(client, created.file.id)


def png(size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def test_list_stores_names_both_regions_with_probe_urls(
    two_regions: Stack, clients: StackClients
) -> None:
    listed = await clients("alice", fresh_tenant()).upload.ListStores(upload_service_pb2.ListStoresRequest())
    assert [(s.name, s.region, s.default) for s in listed.stores] == [
        (DEFAULT, HOME_REGION, True),
        (SECOND_STORE, SECOND_REGION, False),
    ]
    for store in listed.stores:
        assert store.probe_url.startswith(endpoint_of(two_regions, store.name))
        async with httpx.AsyncClient(timeout=10) as http:
            # Unauthenticated: storage answers (refuses) at once, which is all a round trip needs.
            assert (await http.head(store.probe_url)).status_code in (200, 403)


async def test_placement_by_default_hint_and_rtt(two_regions: Stack, clients: StackClients) -> None:
    client = clients("alice", fresh_tenant())
    by_default = await create(client, os.urandom(2048))
    body = os.urandom(2048)
    by_region = await create(client, body, preferred_region=SECOND_REGION)
    by_rtt = await create(client, os.urandom(2048), rtts={DEFAULT: 180, SECOND_STORE: 12})
    unknown_hint = await create(client, os.urandom(2048), preferred_region="mars-1", rtts={"nowhere": 1})
    assert by_default.file.store == DEFAULT
    assert by_region.file.store == SECOND_STORE
    assert by_rtt.file.store == SECOND_STORE
    assert unknown_hint.file.store == DEFAULT
    assert by_default.upload.request.url.startswith(endpoint_of(two_regions, DEFAULT))
    assert by_region.upload.request.url.startswith(endpoint_of(two_regions, SECOND_STORE))
    # The bytes land where the URL points, and nowhere else.
    assert (await put_presigned(by_region.upload.request, body)).status_code == 200
    completed = await complete_upload(client, by_region.upload.id)
    assert completed.file.store == SECOND_STORE
    key = f"originals/{client.tenant}/{by_region.file.id}"
    assert await holds(two_regions, SECOND_STORE, key)
    assert not await holds(two_regions, DEFAULT, key)


async def test_second_region_upload_is_processed_there_with_its_derivatives(
    two_regions: Stack, clients: StackClients, status_events: StatusEvents
) -> None:
    client = clients("alice", fresh_tenant())
    body = png()
    file = await upload_processed(
        client, status_events, body, content_type="image/png", preferred_region=SECOND_REGION
    )
    assert file.status == resources_pb2.FILE_STATUS_READY, file.status_reason
    assert file.store == SECOND_STORE
    key = f"originals/{client.tenant}/{file.id}"
    assert await holds(two_regions, SECOND_STORE, key)
    assert not await holds(two_regions, DEFAULT, key)
    # The thumbnail comes after READY: wait for the processor to write it, in the file's store.
    derivatives: list[resources_pb2.Derivative] = []
    for _ in range(100):
        listed = await client.metadata.ListDerivatives(
            metadata_service_pb2.ListDerivativesRequest(file_id=file.id)
        )
        derivatives = list(listed.derivatives)
        if derivatives:
            break
        await asyncio.sleep(0.2)
    assert derivatives, "no derivative was written"
    for derivative in derivatives:
        assert await holds(two_regions, SECOND_STORE, derivative.storage_key)
        assert not await holds(two_regions, DEFAULT, derivative.storage_key)
    # Downloads are signed for the store that holds the file, and read its bytes.
    url = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file.id))
    assert url.url.startswith(endpoint_of(two_regions, SECOND_STORE))
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(url.url)).content == body
    thumb = await client.download.GetDerivativeUrl(
        download_service_pb2.GetDerivativeUrlRequest(file_id=file.id, kind=derivatives[0].kind)
    )
    assert thumb.url.startswith(endpoint_of(two_regions, SECOND_STORE))


async def test_residency_overrides_hints_and_is_never_violated(
    two_regions: Stack,
    clients: StackClients,
    admin_metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    policy = await set_policy(admin_metadata, tenant, SECOND_STORE)
    assert list(policy.allowed_stores) == [SECOND_STORE]
    read_back = await client.metadata.GetStoragePolicy(metadata_service_pb2.GetStoragePolicyRequest())
    assert list(read_back.allowed_stores) == [SECOND_STORE]
    single = await create(client, os.urandom(1024), preferred_region=HOME_REGION, rtts={DEFAULT: 1})
    multipart = await create(
        client, os.urandom(6 * 1024 * 1024), rtts={DEFAULT: 1}, kind=resources_pb2.UPLOAD_KIND_MULTIPART
    )
    assert single.file.store == SECOND_STORE
    assert single.upload.request.url.startswith(endpoint_of(two_regions, SECOND_STORE))
    assert multipart.file.store == SECOND_STORE
    assert multipart.upload.part_urls
    assert all(
        p.request.url.startswith(endpoint_of(two_regions, SECOND_STORE)) for p in multipart.upload.part_urls
    )
    # SignParts with the session token signs for the same store.
    signed = await client.upload.SignParts(
        upload_service_pb2.SignPartsRequest(
            upload_id=multipart.upload.id, part_numbers=[1], session_token=multipart.upload.session_token
        )
    )
    assert signed.part_urls[0].request.url.startswith(endpoint_of(two_regions, SECOND_STORE))
    # A residency no configured store satisfies gets no URL at all.
    await set_policy(admin_metadata, tenant, "elsewhere")
    error = await rpc_error(create(client, os.urandom(1024)))
    assert error.reason == "RESIDENCY_VIOLATION"
    # Only an administrator sets residency.
    refused = await rpc_error(
        client.metadata.SetStoragePolicy(
            metadata_service_pb2.SetStoragePolicyRequest(
                policy=metadata_service_pb2.StoragePolicy(tenant=tenant)
            )
        )
    )
    assert refused.reason == "SERVICE_ROLE_REQUIRED"


async def test_dedup_never_crosses_stores(
    two_regions: Stack,
    clients: StackClients,
    status_events: StatusEvents,
    admin_metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    body = os.urandom(4096)
    first = await upload_processed(client, status_events, body)
    assert first.status == resources_pb2.FILE_STATUS_READY
    assert first.store == DEFAULT
    # The owner of verified content gets DEDUP in the same store...
    again = await create(client, body)
    assert again.upload.kind == resources_pb2.UPLOAD_KIND_DEDUP
    # ...but not once the tenant is pinned to another store: the bytes are uploaded there.
    await set_policy(admin_metadata, tenant, SECOND_STORE)
    pinned = await create(client, body)
    assert pinned.upload.kind != resources_pb2.UPLOAD_KIND_DEDUP
    assert pinned.file.store == SECOND_STORE
    assert (await put_presigned(pinned.upload.request, body)).status_code == 200
    await complete_upload(client, pinned.upload.id)
    await status_events.wait_for(pinned.file.id)
    settled = await get_file(client, pinned.file.id)
    assert settled.status == resources_pb2.FILE_STATUS_READY
    # Verified, it keeps its own copy in its own store: the blob in `default` is not shared.
    assert settled.store == SECOND_STORE
    assert not settled.deduplicated
    assert await holds(two_regions, SECOND_STORE, f"originals/{tenant}/{pinned.file.id}")


async def wait_for_replicas(client: Client, file_id: str, expected: list[str]) -> resources_pb2.File:
    file = await get_file(client, file_id)
    for _ in range(150):
        if list(file.replica_stores) == expected:
            return file
        await asyncio.sleep(0.2)
        file = await get_file(client, file_id)
    raise AssertionError(f"replicas {list(file.replica_stores)}, expected {expected}")


async def test_replication_copies_ready_originals_and_the_reconciler_repairs_them(
    two_regions: Stack,
    clients: StackClients,
    status_events: StatusEvents,
    admin_metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    await set_policy(admin_metadata, tenant, replicate=True)
    body = os.urandom(300 * 1024)
    file = await upload_processed(client, status_events, body)
    assert file.status == resources_pb2.FILE_STATUS_READY
    assert file.store == DEFAULT
    file = await wait_for_replicas(client, file.id, [SECOND_STORE])
    key = f"originals/{tenant}/{file.id}"
    client_r2, bucket_r2 = storage_of(two_regions, SECOND_STORE)
    copied = await asyncio.to_thread(client_r2.get_object, Bucket=bucket_r2, Key=key)  # type: ignore[attr-defined]
    assert copied["Body"].read() == body
    # The nearest copy by the caller's hint; the file's own store without one.
    near = await client.download.GetDownloadUrl(
        download_service_pb2.GetDownloadUrlRequest(file_id=file.id, preferred_region=SECOND_REGION)
    )
    home = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file.id))
    assert near.url.startswith(endpoint_of(two_regions, SECOND_STORE))
    assert home.url.startswith(endpoint_of(two_regions, DEFAULT))
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(near.url)).content == body

    # The replica's object is lost: the reconciler (across both stores) copies it again.
    await asyncio.to_thread(client_r2.delete_object, Bucket=bucket_r2, Key=key)  # type: ignore[attr-defined]
    assert not await holds(two_regions, SECOND_STORE, key)
    report = await run_reconciler(reconciler_options(two_regions, tenant))
    kinds = [(finding.kind, finding.resolution) for finding in report.findings]
    assert kinds == [(FindingKind.MISSING_REPLICA, Resolution.REPAIRED)], report.render_text()
    assert await holds(two_regions, SECOND_STORE, key)
    assert report.scanned["replicas"] == 1


async def test_residency_bounds_replication_and_the_reconciler_reads_each_store(
    two_regions: Stack,
    clients: StackClients,
    status_events: StatusEvents,
    admin_metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    await set_policy(admin_metadata, tenant, SECOND_STORE, replicate=True)
    file = await upload_processed(client, status_events, png(), content_type="image/png")
    assert file.status == resources_pb2.FILE_STATUS_READY
    assert file.store == SECOND_STORE
    # Replication runs before the thumbnail: once the thumbnail is there, replication was decided.
    for _ in range(100):
        listed = await client.metadata.ListDerivatives(
            metadata_service_pb2.ListDerivativesRequest(file_id=file.id)
        )
        if listed.derivatives:
            break
        await asyncio.sleep(0.2)
    assert listed.derivatives
    assert list((await get_file(client, file.id)).replica_stores) == []
    assert not await holds(two_regions, DEFAULT, f"originals/{tenant}/{file.id}")
    # The catalogue itself refuses a replica outside the residency.
    refused = await rpc_error(
        admin_metadata.RecordReplica(
            metadata_service_pb2.RecordReplicaRequest(
                file_id=file.id, store=DEFAULT, state=metadata_service_pb2.REPLICA_STATE_READY
            )
        )
    )
    assert refused.reason == "RESIDENCY_VIOLATION"
    # A file, its blob and its derivatives in the second store are found there: nothing is missing.
    report = await run_reconciler(reconciler_options(two_regions, tenant))
    assert report.findings == [], report.render_text()
    assert report.scanned["files"] == 1
    assert report.scanned["derivatives"] >= 1
