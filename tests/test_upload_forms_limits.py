"""Browser form uploads (POST policy), per-tenant limits, quotas, dedup and hostile input, against
the real stack."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from filestore.stack import Stack
from filestore.upload.app import build
from filestore.upload.settings import UploadSettings
from filestore.v1 import (
    download_service_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.stacks import broker_env
from tests.support import (
    Client,
    ClientFactory,
    StatusEvents,
    post_form,
    rpc_error,
    service_token,
    stack_channel,
)

Kind = resources_pb2.UploadKind
FStatus = resources_pb2.FileStatus


@pytest.fixture
async def limited_broker(
    stack: Stack,
) -> AsyncIterator[Callable[[str, str], upload_service_pb2_grpc.UploadServiceAsyncStub]]:
    """A broker with per-tenant limits: tenant ``tiny`` may send 1 KiB of images only."""
    settings = UploadSettings.from_env(
        broker_env(
            stack,
            FILESTORE_TENANT_LIMITS=json.dumps(
                {"tiny": {"max_upload_bytes": 1024, "allowed_content_types": ["image/*"]}}
            ),
        )
    )
    handle = await build(settings)
    await handle.start()
    channels: list[grpc.aio.Channel] = []

    def stub(subject: str, tenant: str) -> upload_service_pb2_grpc.UploadServiceAsyncStub:
        token = mint_token(stack.endpoints.auth_secret, subject=subject, tenant=tenant)
        channel = insecure_channel(f"127.0.0.1:{handle.port}", token=lambda: token)
        channels.append(channel)
        return upload_service_pb2_grpc.UploadServiceStub(channel)

    yield stub
    for channel in channels:
        await channel.close()
    await handle.stop(0)


async def create(
    upload: upload_service_pb2_grpc.UploadServiceAsyncStub, body: bytes, **fields: object
) -> upload_service_pb2.CreateUploadResponse:
    values: dict[str, object] = {
        "name": "photo.png",
        "size": len(body),
        "content_type": "image/png",
        **fields,
    }
    request = upload_service_pb2.CreateUploadRequest(**values)  # type: ignore[arg-type]
    response: upload_service_pb2.CreateUploadResponse = await upload.CreateUpload(request)
    return response


async def test_a_browser_form_upload_with_a_post_policy(
    client_for: ClientFactory,
    status_events: StatusEvents,
) -> None:
    client = client_for()
    body = os.urandom(3000)
    created = await create(client.upload, body, kind=Kind.UPLOAD_KIND_POST_POLICY)
    request = created.upload.request
    assert created.upload.kind == Kind.UPLOAD_KIND_POST_POLICY
    assert request.method == "POST"
    assert request.form_fields["key"] == f"originals/{client.tenant}/{created.file.id}"
    assert {"policy", "x-amz-signature", "x-amz-credential", "Content-Type"} <= set(request.form_fields)

    # Storage enforces the policy: exact length, the signed content type, the signed key.
    assert (await post_form(request, body[:-1])).status_code == 400
    assert (await post_form(request, body + b"!")).status_code == 400
    assert (await post_form(request, body, **{"Content-Type": "text/html"})).status_code == 403
    assert (await post_form(request, body, key=f"originals/{client.tenant}/other")).status_code == 403
    missing = await rpc_error(
        client.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id))
    )
    assert (type(missing), missing.reason) == (FailedPrecondition, "OBJECT_MISSING")

    assert (await post_form(request, body)).status_code in (200, 201, 204)
    done = await client.upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id)
    )
    assert done.file.status == FStatus.FILE_STATUS_UPLOADED
    assert (await status_events.wait_for(created.file.id)).status == FStatus.FILE_STATUS_READY


async def test_tenant_limits_narrow_size_and_types(
    limited_broker: Callable[[str, str], upload_service_pb2_grpc.UploadServiceAsyncStub],
) -> None:
    tiny = limited_broker("ann", "tiny")
    ok = await create(tiny, os.urandom(1024))
    assert ok.upload.request.url
    too_big = await rpc_error(create(tiny, os.urandom(1025)))
    assert (type(too_big), too_big.reason) == (ResourceExhausted, "FILE_TOO_LARGE")
    assert too_big.metadata["max_bytes"] == "1024"
    wrong_type = await rpc_error(
        tiny.CreateUpload(
            upload_service_pb2.CreateUploadRequest(name="a.pdf", size=10, content_type="application/pdf")
        )
    )
    assert (type(wrong_type), wrong_type.reason) == (InvalidArgument, "CONTENT_TYPE_NOT_ALLOWED")
    # Other tenants keep the service-wide limits.
    other = limited_broker("bob", "roomy")
    assert (await create(other, os.urandom(4096), content_type="application/pdf")).upload.id


async def test_bytes_replaced_through_a_post_policy_after_verification_are_quarantined(
    client_for: ClientFactory, status_events: StatusEvents
) -> None:
    # A POST policy cannot be made write-once (S3 has no conditional form upload), so a form may be
    # submitted again until the policy expires. Storage announces the new bytes; the processor
    # finds they are not the verified ones and quarantines the file, which stops its downloads.
    client = client_for()
    body = os.urandom(3000)
    created = await create(client.upload, body, kind=Kind.UPLOAD_KIND_POST_POLICY)
    assert (await post_form(created.upload.request, body)).status_code in (200, 201, 204)
    await client.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id))
    assert (await status_events.wait_for(created.file.id)).status == FStatus.FILE_STATUS_READY
    assert (await post_form(created.upload.request, os.urandom(3000))).status_code in (200, 201, 204)
    changed = await status_events.wait_for_status(created.file.id, FStatus.FILE_STATUS_QUARANTINED)
    assert changed.reason == "CONTENT_CHANGED"
    refused = await rpc_error(
        client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=created.file.id))
    )
    assert refused.reason == "FILE_QUARANTINED"


async def test_quota_is_reserved_and_released(client_for: ClientFactory, stack: Stack) -> None:
    tenant = f"quota-{os.urandom(4).hex()}"
    client = client_for("carol", tenant)
    token = service_token(stack)
    async with stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token) as channel:
        admin = metadata_service_pb2_grpc.MetadataServiceStub(channel)
        await admin.SetQuota(metadata_service_pb2.SetQuotaRequest(tenant=tenant, limit_bytes=10_000))
        first = await create(client.upload, os.urandom(6000))
        refused = await rpc_error(create(client.upload, os.urandom(6000)))
        assert (type(refused), refused.reason) == (ResourceExhausted, "QUOTA_EXCEEDED")
        # Aborting releases the reservation, so the same request now fits.
        await client.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=first.upload.id))
        assert (await create(client.upload, os.urandom(6000))).upload.id
        quota = await admin.GetQuota(metadata_service_pb2.GetQuotaRequest(tenant=tenant))
        assert quota.limit_bytes == 10_000


async def _upload_ready(client: Client, body: bytes, events: StatusEvents) -> str:
    created = await create(client.upload, body, sha256=hashlib.sha256(body).hexdigest())
    async with httpx.AsyncClient(timeout=30) as http:
        put = await http.put(
            created.upload.request.url, content=body, headers=dict(created.upload.request.headers)
        )
    assert put.status_code == 200
    await client.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id))
    assert (await events.wait_for(created.file.id)).status == FStatus.FILE_STATUS_READY
    return created.file.id


async def test_dedup_within_a_tenant_only_and_only_for_verified_content(
    client_for: ClientFactory,
    status_events: StatusEvents,
) -> None:
    owner = client_for("dora", "dedup-co")
    body = os.urandom(5000)
    digest = hashlib.sha256(body).hexdigest()
    # Declared but never sent: an unverified digest is not a dedup target.
    pending = await create(owner.upload, body, sha256=digest)
    assert pending.upload.kind == Kind.UPLOAD_KIND_SINGLE
    original = await _upload_ready(owner, body, status_events)

    # The owner of the verified content: no bytes move.
    same = await create(owner.upload, body, sha256=digest)
    assert same.upload.kind == Kind.UPLOAD_KIND_DEDUP
    assert same.upload.state == resources_pb2.UPLOAD_STATE_COMPLETED
    assert not same.upload.request.url  # no bytes move
    assert not same.upload.part_urls
    assert same.file.id != original
    # The pipeline still runs for the new record, reading the shared bytes.
    assert (await status_events.wait_for(same.file.id)).status == FStatus.FILE_STATUS_READY

    # Another user of the tenant who knows the digest must send the bytes (tests/test_dedup.py).
    colleague = await create(client_for("erin", "dedup-co").upload, body, sha256=digest)
    assert colleague.upload.kind == Kind.UPLOAD_KIND_SINGLE
    elsewhere = await create(client_for("dora", "other-co").upload, body, sha256=digest)
    assert elsewhere.upload.kind == Kind.UPLOAD_KIND_SINGLE  # never across tenants


@pytest.mark.parametrize(
    ("fields", "code", "reason"),
    [
        ({"size": 6 * 1024**4}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SIZE"),
        ({"size": 5 * 1024**3 + 1}, grpc.StatusCode.RESOURCE_EXHAUSTED, "FILE_TOO_LARGE"),
        ({"size": -(2**62)}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SIZE"),
        ({"kind": Kind.UPLOAD_KIND_DEDUP}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UPLOAD_KIND"),
        ({"kind": 99}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ENUM_VALUE"),
        (
            {"part_size": 8 * 1024**2, "kind": Kind.UPLOAD_KIND_SINGLE},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PART_SIZE",
        ),
        ({"name": "a\x1b[31mred"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME"),
        ({"name": "a\u2066b"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME"),
        ({"name": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME"),
        (
            {"content_type": "text/html; charset=utf-8"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_CONTENT_TYPE",
        ),
    ],
    ids=[
        "beyond-5tib",
        "beyond-max",
        "hugely-negative",
        "dedup-asked",
        "unknown-kind",
        "part-size-on-single",
        "escape-sequence",
        "bidi-isolate",
        "blank-name",
        "type-parameters",
    ],
)
async def test_absurd_requests_are_refused_and_change_nothing(
    client_for: ClientFactory, fields: dict[str, object], code: grpc.StatusCode, reason: str
) -> None:
    tenant = f"absurd-{os.urandom(4).hex()}"
    client = client_for("frank", tenant)
    request: dict[str, object] = {
        "name": "ok.bin",
        "size": 10,
        "content_type": "application/octet-stream",
        **fields,
    }
    refused = await rpc_error(client.upload.CreateUpload(upload_service_pb2.CreateUploadRequest(**request)))  # type: ignore[arg-type]
    assert (refused.code, refused.reason) == (code, reason)
    listed = await client.metadata.ListFiles(metadata_service_pb2.ListFilesRequest())
    assert list(listed.files) == []  # no file record was made


async def test_hostile_names_never_reach_a_key(client_for: ClientFactory) -> None:
    client = client_for()
    for name in ("../../../etc/passwd", "a/b\\c", "%2e%2e%2fx", "名前.png"):
        created = await create(client.upload, b"0123456789", name=name)
        assert created.file.name == name  # kept as metadata, exactly as sent
        assert created.upload.request.url.split("?")[0].endswith(
            f"/originals/{client.tenant}/{created.file.id}"
        )
