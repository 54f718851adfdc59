"""The hostile-input catalogue: requests an attacker or a buggy client sends, across the four services.

Each case names the status and ErrorInfo reason it must get, and the test proves that nothing changed:
the catalogue's rows (files, uploads, grants, quotas, idempotency keys) and the bucket's objects are
counted before and after every case.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import grpc
import httpx
import jwt
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from filestore.core.auth import mint_token
from filestore.stack import Stack
from filestore.v1 import (
    download_service_pb2,
    metadata_service_pb2,
    processor_service_pb2,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.storage import admin_storage
from tests.support import (
    Client,
    ClientFactory,
    StatusEvents,
    bare_channel,
    create_upload,
    rpc_error,
    upload_until_processed,
)

TABLES = ("files", "uploads", "grants", "quotas", "idempotency_keys", "blobs", "derivatives")
C = grpc.StatusCode


@dataclass(frozen=True)
class World:
    """What the cases act on: a victim's files, an attacker in another tenant, and tokens."""

    stack: Stack
    alice: Client
    mallory: Client
    ready: resources_pb2.File
    pending: upload_service_pb2.CreateUploadResponse
    put_url: resources_pb2.PresignedRequest
    used_request_id: str


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[World], Awaitable[Any]]
    code: grpc.StatusCode
    reason: str


def _create(**fields: Any) -> upload_service_pb2.CreateUploadRequest:
    base: dict[str, Any] = {"name": "ok.txt", "size": 5, "content_type": "text/plain"}
    return upload_service_pb2.CreateUploadRequest(**{**base, **fields})


def _upload(world: World, **fields: Any) -> Awaitable[Any]:
    return world.mallory.upload.CreateUpload(_create(**fields))


async def _with_token(world: World, token: str | None) -> Any:
    """GetUpload of alice's upload presenting ``token`` (or none) instead of a valid one."""
    address = world.stack.endpoints.upload_addr
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    async with bare_channel(world.stack.endpoints, address) as channel:
        stub = upload_service_pb2_grpc.UploadServiceStub(channel)
        return await stub.GetUpload(
            upload_service_pb2.GetUploadRequest(upload_id=world.pending.upload.id), metadata=metadata
        )


def _secret(world: World) -> str:
    return world.stack.endpoints.auth_secret


def _forged_page_token(world: World) -> Awaitable[Any]:
    return world.alice.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(page_token="eyJwIjp7fX0"))


def _forged_session_token(world: World) -> Awaitable[Any]:
    """SignParts on alice's upload with a session token the broker never issued: refused before any
    catalogue read, so whose upload it is does not even come up."""
    return world.mallory.upload.SignParts(
        upload_service_pb2.SignPartsRequest(
            upload_id=world.pending.upload.id, part_numbers=[1], session_token="AQAAAAB" + "A" * 120
        )
    )


CASES: list[Case] = [
    # Names: refused, never silently rewritten, never a key.
    Case("empty name", lambda w: _upload(w, name=""), C.INVALID_ARGUMENT, "INVALID_NAME"),
    Case("blank name", lambda w: _upload(w, name="   "), C.INVALID_ARGUMENT, "INVALID_NAME"),
    Case("NUL in name", lambda w: _upload(w, name="a\x00.txt"), C.INVALID_ARGUMENT, "INVALID_STRING"),
    Case(
        "traversal with NUL",
        lambda w: _upload(w, name="../../etc/passwd\x00.png"),
        C.INVALID_ARGUMENT,
        "INVALID_STRING",
    ),
    Case("bell in name", lambda w: _upload(w, name="a\x07.txt"), C.INVALID_ARGUMENT, "INVALID_NAME"),
    Case("newline in name", lambda w: _upload(w, name="a\nb.txt"), C.INVALID_ARGUMENT, "INVALID_NAME"),
    Case("escape sequence", lambda w: _upload(w, name="\x1b[31mred.txt"), C.INVALID_ARGUMENT, "INVALID_NAME"),
    Case(
        "right-to-left override",
        lambda w: _upload(w, name="cod\u202eexe.txt"),
        C.INVALID_ARGUMENT,
        "INVALID_NAME",
    ),
    Case(
        "left-to-right isolate", lambda w: _upload(w, name="a\u2066b.txt"), C.INVALID_ARGUMENT, "INVALID_NAME"
    ),
    Case("10 KB name", lambda w: _upload(w, name="n" * 10_240), C.INVALID_ARGUMENT, "INVALID_NAME"),
    Case("256-character name", lambda w: _upload(w, name="n" * 256), C.INVALID_ARGUMENT, "INVALID_NAME"),
    # Sizes.
    Case("negative size", lambda w: _upload(w, size=-1), C.INVALID_ARGUMENT, "INVALID_SIZE"),
    Case(
        "empty multipart",
        lambda w: _upload(w, size=0, kind=resources_pb2.UPLOAD_KIND_MULTIPART),
        C.INVALID_ARGUMENT,
        "INVALID_SIZE",
    ),
    Case("2^62 bytes", lambda w: _upload(w, size=2**62), C.INVALID_ARGUMENT, "INVALID_SIZE"),
    Case("int64 max", lambda w: _upload(w, size=2**63 - 1), C.INVALID_ARGUMENT, "INVALID_SIZE"),
    # Content types and digests.
    Case(
        "type without subtype",
        lambda w: _upload(w, content_type="text"),
        C.INVALID_ARGUMENT,
        "INVALID_CONTENT_TYPE",
    ),
    Case(
        "type with spaces",
        lambda w: _upload(w, content_type="text /plain"),
        C.INVALID_ARGUMENT,
        "INVALID_CONTENT_TYPE",
    ),
    Case(
        "type with CRLF",
        lambda w: _upload(w, content_type="text/plain\r\nX-Evil: 1"),
        C.INVALID_ARGUMENT,
        "INVALID_CONTENT_TYPE",
    ),
    Case("empty type", lambda w: _upload(w, content_type=""), C.INVALID_ARGUMENT, "INVALID_CONTENT_TYPE"),
    Case("short sha256", lambda w: _upload(w, sha256="abc"), C.INVALID_ARGUMENT, "INVALID_SHA256"),
    Case("upper-case sha256", lambda w: _upload(w, sha256="A" * 64), C.INVALID_ARGUMENT, "INVALID_SHA256"),
    Case("non-hex sha256", lambda w: _upload(w, sha256="g" * 64), C.INVALID_ARGUMENT, "INVALID_SHA256"),
    # Tokens.
    Case("no token", lambda w: _with_token(w, None), C.UNAUTHENTICATED, "TOKEN_MISSING"),
    Case(
        "forged token",
        lambda w: _with_token(w, mint_token("f" * 40, subject="alice", tenant="acme")),
        C.UNAUTHENTICATED,
        "TOKEN_INVALID",
    ),
    Case(
        "expired token",
        lambda w: _with_token(
            w, mint_token(_secret(w), subject="alice", tenant="acme", now=time.time() - 7200)
        ),
        C.UNAUTHENTICATED,
        "TOKEN_EXPIRED",
    ),
    Case(
        "alg none token",
        lambda w: _with_token(
            w, jwt.encode({"sub": "alice", "tenant": "acme", "exp": 2**40}, key="", algorithm="none")
        ),
        C.UNAUTHENTICATED,
        "TOKEN_INVALID",
    ),
    Case(
        "token without tenant",
        lambda w: _with_token(w, jwt.encode({"sub": "alice", "exp": 2**40}, _secret(w), algorithm="HS256")),
        C.UNAUTHENTICATED,
        "TOKEN_INVALID",
    ),
    Case(
        "user claiming the service role with a forged key",
        lambda w: _with_token(w, mint_token("z" * 40, subject="alice", tenant="*", roles=["service"])),
        C.UNAUTHENTICATED,
        "TOKEN_INVALID",
    ),
    # Other tenants' and unknown ids: NOT_FOUND, with no hint that they exist.
    Case(
        "other tenant's upload",
        lambda w: w.mallory.upload.GetUpload(
            upload_service_pb2.GetUploadRequest(upload_id=w.pending.upload.id)
        ),
        C.NOT_FOUND,
        "UPLOAD_NOT_FOUND",
    ),
    Case(
        "complete other tenant's upload",
        lambda w: w.mallory.upload.CompleteUpload(
            upload_service_pb2.CompleteUploadRequest(upload_id=w.pending.upload.id)
        ),
        C.NOT_FOUND,
        "UPLOAD_NOT_FOUND",
    ),
    Case(
        "unknown upload",
        lambda w: w.alice.upload.GetUpload(
            upload_service_pb2.GetUploadRequest(upload_id="00000000-0000-4000-8000-000000000000")
        ),
        C.NOT_FOUND,
        "UPLOAD_NOT_FOUND",
    ),
    Case(
        "other tenant's file",
        lambda w: w.mallory.metadata.GetFile(metadata_service_pb2.GetFileRequest(file_id=w.ready.id)),
        C.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    Case(
        "unknown file",
        lambda w: w.alice.metadata.GetFile(metadata_service_pb2.GetFileRequest(file_id="../../etc/passwd")),
        C.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    Case(
        "delete other tenant's file",
        lambda w: w.mallory.metadata.DeleteFile(metadata_service_pb2.DeleteFileRequest(file_id=w.ready.id)),
        C.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    Case(
        "rename other tenant's file",
        lambda w: w.mallory.metadata.UpdateFile(
            metadata_service_pb2.UpdateFileRequest(
                file=resources_pb2.File(id=w.ready.id, name="pwned"), update_mask=FieldMask(paths=["name"])
            )
        ),
        C.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    Case(
        "grant on other tenant's file",
        lambda w: w.mallory.metadata.CreateGrant(
            metadata_service_pb2.CreateGrantRequest(
                grant=resources_pb2.Grant(
                    file_id=w.ready.id, principal="mallory", permission=resources_pb2.PERMISSION_READ
                )
            )
        ),
        C.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    Case(
        "download other tenant's file",
        lambda w: w.mallory.download.GetDownloadUrl(
            download_service_pb2.GetDownloadUrlRequest(file_id=w.ready.id)
        ),
        C.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    Case(
        "status of other tenant's file",
        lambda w: w.mallory.processor.GetProcessingStatus(
            processor_service_pb2.GetProcessingStatusRequest(file_id=w.ready.id)
        ),
        C.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    # Paging and masks.
    Case(
        "negative page size",
        lambda w: w.alice.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(page_size=-1)),
        C.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    Case(
        "absurd page size",
        lambda w: w.alice.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(page_size=10**9)),
        C.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    Case("forged page token", _forged_page_token, C.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"),
    Case("forged session token", _forged_session_token, C.INVALID_ARGUMENT, "SESSION_TOKEN_INVALID"),
    Case(
        "garbage page token",
        lambda w: w.alice.metadata.ListFiles(
            metadata_service_pb2.ListFilesRequest(page_token="%%%not-base64%%%")
        ),
        C.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    ),
    Case(
        "empty update mask",
        lambda w: w.alice.metadata.UpdateFile(
            metadata_service_pb2.UpdateFileRequest(file=resources_pb2.File(id=w.ready.id, name="x"))
        ),
        C.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    Case(
        "mask naming status",
        lambda w: w.alice.metadata.UpdateFile(
            metadata_service_pb2.UpdateFileRequest(
                file=resources_pb2.File(id=w.ready.id, status=resources_pb2.FILE_STATUS_READY),
                update_mask=FieldMask(paths=["status"]),
            )
        ),
        C.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    Case(
        "65 labels",
        lambda w: w.alice.metadata.UpdateFile(
            metadata_service_pb2.UpdateFileRequest(
                file=resources_pb2.File(id=w.ready.id, labels={f"k{i}": "v" for i in range(65)}),
                update_mask=FieldMask(paths=["labels"]),
            )
        ),
        C.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    Case(
        "1 MB label value",
        lambda w: w.alice.metadata.UpdateFile(
            metadata_service_pb2.UpdateFileRequest(
                file=resources_pb2.File(id=w.ready.id, labels={"k": "v" * 1_000_000}),
                update_mask=FieldMask(paths=["labels"]),
            )
        ),
        C.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    Case(
        "upper-case label key",
        lambda w: w.alice.metadata.UpdateFile(
            metadata_service_pb2.UpdateFileRequest(
                file=resources_pb2.File(id=w.ready.id, labels={"Key": "v"}),
                update_mask=FieldMask(paths=["labels"]),
            )
        ),
        C.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    Case(
        "stale etag",
        lambda w: w.alice.metadata.UpdateFile(
            metadata_service_pb2.UpdateFileRequest(
                file=resources_pb2.File(id=w.ready.id, name="renamed", etag="999999"),
                update_mask=FieldMask(paths=["name"]),
            )
        ),
        C.ABORTED,
        "ETAG_MISMATCH",
    ),
    Case(
        "skip the pipeline",
        lambda w: w.alice.metadata.TransitionFile(
            metadata_service_pb2.TransitionFileRequest(
                file_id=w.pending.file.id, status=resources_pb2.FILE_STATUS_READY
            )
        ),
        C.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    ),
    Case(
        "user sets a quota",
        lambda w: w.alice.metadata.SetQuota(
            metadata_service_pb2.SetQuotaRequest(tenant="acme", limit_bytes=10**15)
        ),
        C.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    ),
    Case(
        "user lists dead letters",
        lambda w: w.alice.processor.ListDeadLetters(processor_service_pb2.ListDeadLettersRequest()),
        C.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    ),
    # Downloads.
    Case(
        "download a pending file",
        lambda w: w.alice.download.GetDownloadUrl(
            download_service_pb2.GetDownloadUrlRequest(file_id=w.pending.file.id)
        ),
        C.FAILED_PRECONDITION,
        "FILE_PENDING",
    ),
    Case(
        "negative ttl",
        lambda w: w.alice.download.GetDownloadUrl(
            download_service_pb2.GetDownloadUrlRequest(file_id=w.ready.id, ttl_seconds=-5)
        ),
        C.INVALID_ARGUMENT,
        "INVALID_TTL",
    ),
    Case(
        "batch of 101",
        lambda w: w.alice.download.BatchGetDownloadUrls(
            download_service_pb2.BatchGetDownloadUrlsRequest(
                requests=[download_service_pb2.GetDownloadUrlRequest(file_id=w.ready.id)] * 101
            )
        ),
        C.INVALID_ARGUMENT,
        "TOO_MANY_FILES",
    ),
    # Idempotency.
    Case(
        "request_id replayed with another body",
        lambda w: w.alice.upload.CreateUpload(_create(name="different.txt", request_id=w.used_request_id)),
        C.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    ),
]


def _tamper(url: str, *, key: str | None = None, **query: str) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    params.update(query)
    path = parts.path if key is None else parts.path.rsplit("/", 1)[0] + "/" + key
    return urlunsplit(parts._replace(path=path, query=urlencode(params)))


@dataclass(frozen=True)
class UrlCase:
    name: str
    method: str
    url: Callable[[World], str]


def _signature(url: str) -> str:
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    return ("0" if signature[0] != "0" else "1") + signature[1:]


URL_CASES = [
    UrlCase("presigned PUT used as DELETE", "DELETE", lambda w: w.put_url.url),
    UrlCase("presigned PUT used for another key", "PUT", lambda w: _tamper(w.put_url.url, key="victim")),
    UrlCase(
        "presigned PUT with a longer expiry",
        "PUT",
        lambda w: _tamper(w.put_url.url, **{"X-Amz-Expires": "604800"}),
    ),
    UrlCase(
        "presigned PUT with a changed signature",
        "PUT",
        lambda w: _tamper(w.put_url.url, **{"X-Amz-Signature": _signature(w.put_url.url)}),
    ),
]


async def _counts(engine: AsyncEngine, stack: Stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with engine.connect() as connection:
        for table in TABLES:
            counts[table] = int(
                (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            )
    endpoints = stack.endpoints
    storage = admin_storage(stack)
    listed = storage.list_objects_v2(Bucket=endpoints.bucket)
    counts["objects"] = int(listed.get("KeyCount", 0))
    counts["multipart_uploads"] = len(
        storage.list_multipart_uploads(Bucket=endpoints.bucket).get("Uploads", [])
    )
    return counts


@pytest.fixture
async def database(stack: Stack) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(stack.endpoints.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def world(stack: Stack, client_for: ClientFactory, status_events: StatusEvents) -> World:
    alice, mallory = client_for("alice", "acme"), client_for("mallory", "evil")
    ready = await upload_until_processed(alice, status_events, os.urandom(512))
    pending = await create_upload(alice, os.urandom(64))
    request_id = str(uuid.uuid4())
    await alice.upload.CreateUpload(_create(name="first.txt", request_id=request_id))
    return World(
        stack=stack,
        alice=alice,
        mallory=mallory,
        ready=ready,
        pending=pending,
        put_url=pending.upload.request,
        used_request_id=request_id,
    )


async def test_hostile_requests_are_refused_and_change_nothing(
    world: World, database: AsyncEngine, stack: Stack
) -> None:
    before = await _counts(database, stack)
    failures = []
    for case in CASES:
        error = await rpc_error(case.call(world))
        if (error.code, error.reason) != (case.code, case.reason):
            failures.append(
                f"{case.name}: got {error.code.name} {error.reason}, want {case.code.name} {case.reason}"
            )
    async with httpx.AsyncClient(timeout=30) as http:
        for url_case in URL_CASES:
            response = await http.request(
                url_case.method, url_case.url(world), content=b"x" * 64, headers=dict(world.put_url.headers)
            )
            if response.status_code != 403:
                failures.append(f"{url_case.name}: storage answered {response.status_code}, want 403")
    after = await _counts(database, stack)
    print(f"hostile-input catalogue: {len(CASES) + len(URL_CASES)} cases")
    assert failures == [], "\n".join(failures)
    assert after == before
    assert len(CASES) + len(URL_CASES) >= 40
