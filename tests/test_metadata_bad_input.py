"""Bad input to MetadataService against the real stack, on SQLite and on PostgreSQL: each case gets
its status and ErrorInfo reason and changes nothing in the database (read from it before and after);
whoever may not see a file gets exactly the answer of a file that does not exist."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2
from tests.catalogue import begin_multipart_request, begin_upload_request, create_file, refused_without_change
from tests.support import Client, ClientFactory, rpc_error

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Status = resources_pb2.FileStatus
Code = grpc.StatusCode


@dataclass(frozen=True)
class Scene:
    """A file of alice's, and everyone who might poke at it."""

    tenant: str
    file: resources_pb2.File
    alice: Client
    bob: Client  # same tenant, no grant
    mallory: Client  # another tenant
    service: MetadataStub

    @property
    def tenants(self) -> tuple[str, ...]:
        return (self.tenant, self.mallory.tenant)


def _update(file_id: str, paths: list[str], **fields: Any) -> pb.UpdateFileRequest:
    return pb.UpdateFileRequest(
        file=resources_pb2.File(id=file_id, **fields), update_mask=FieldMask(paths=paths)
    )


def _new(**fields: Any) -> pb.CreateFileRequest:
    values: dict[str, Any] = {"name": "ok.txt", "declared_content_type": "text/plain", "size": 1, **fields}
    return pb.CreateFileRequest(file=resources_pb2.File(**values))


def _begin_with_checksum(
    kind: resources_pb2.UploadKind.ValueType, algorithm: resources_pb2.ChecksumAlgorithm.ValueType
) -> pb.BeginUploadRequest:
    request = begin_upload_request("", "", 6 * 1024 * 1024)
    request.kind = kind
    request.part_checksum_algorithm = algorithm
    if kind == resources_pb2.UPLOAD_KIND_MULTIPART:
        request.part_size, request.part_count = 5 * 1024 * 1024, 2
    return request


def _begin_multipart(tenant: str, **fields: str) -> pb.BeginUploadRequest:
    """A service's multipart BeginUpload with a storage upload (``fields`` override its ids)."""
    request = begin_multipart_request(
        tenant, "alice", size=6, part_size=5 * 1024 * 1024, part_count=1, storage_upload_id="u"
    )
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def _begin_single(tenant: str, **fields: str) -> pb.BeginUploadRequest:
    request = begin_upload_request(tenant, "alice" if tenant else "", 6)
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def _begin_empty_multipart(tenant: str) -> pb.BeginUploadRequest:
    """0 bytes in parts: storage completes a multipart upload from one part at least."""
    request = begin_upload_request(tenant, "alice", 0)
    request.kind = resources_pb2.UPLOAD_KIND_MULTIPART
    request.part_size, request.part_count = 5 * 1024 * 1024, 1
    return request


_UNKNOWN_ID = str(uuid.uuid4())
_TOO_MANY_LABELS = {f"k{i}": "v" for i in range(65)}
_BAD_CASES: list[tuple[str, Callable[[Scene], Awaitable[object]], grpc.StatusCode, str]] = [
    # Unknown ids and other tenants' ids: NOT_FOUND, exactly as if the file did not exist.
    (
        "get-unknown",
        lambda s: s.alice.metadata.GetFile(pb.GetFileRequest(file_id=_UNKNOWN_ID)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "update-unknown",
        lambda s: s.alice.metadata.UpdateFile(_update(_UNKNOWN_ID, ["name"], name="x")),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "delete-unknown",
        lambda s: s.alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=_UNKNOWN_ID)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "get-other-tenant",
        lambda s: s.mallory.metadata.GetFile(pb.GetFileRequest(file_id=s.file.id)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "update-other-tenant",
        lambda s: s.mallory.metadata.UpdateFile(_update(s.file.id, ["name"], name="pwned")),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "delete-other-tenant",
        lambda s: s.mallory.metadata.DeleteFile(pb.DeleteFileRequest(file_id=s.file.id)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "transition-other-tenant",
        lambda s: s.mallory.metadata.TransitionFile(
            pb.TransitionFileRequest(file_id=s.file.id, status=Status.FILE_STATUS_DELETED)
        ),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "grant-other-tenant",
        lambda s: s.mallory.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(
                    file_id=s.file.id, principal="mallory", permission=resources_pb2.PERMISSION_READ
                )
            )
        ),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "read-other-tenant",
        lambda s: s.mallory.metadata.AuthorizeRead(pb.AuthorizeReadRequest(file_id=s.file.id)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "service-wrong-tenant",
        lambda s: s.service.DeleteFile(pb.DeleteFileRequest(file_id=s.file.id, tenant=s.mallory.tenant)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "update-other-user",
        lambda s: s.bob.metadata.UpdateFile(_update(s.file.id, ["name"], name="mine")),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    # Masks.
    (
        "mask-empty",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, [], name="x")),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "mask-size",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["size"], size=1)),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "mask-owner-and-name",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["name", "owner"], name="x", owner="bob")),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "mask-status",
        lambda s: s.alice.metadata.UpdateFile(
            _update(s.file.id, ["status"], status=Status.FILE_STATUS_READY)
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "mask-wildcard",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["*"], name="x")),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "etag-not-ours",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["name"], name="x", etag="W/abc")),
        Code.INVALID_ARGUMENT,
        "INVALID_ETAG",
    ),
    (
        "etag-stale",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["name"], name="x", etag="99")),
        Code.ABORTED,
        "ETAG_MISMATCH",
    ),
    # Page sizes, filters and page tokens.
    (
        "page-size-negative",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_size=-1)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    (
        "page-size-1001",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_size=1001)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    (
        "page-size-int32-max",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_size=2**31 - 1)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    (
        "page-size-int32-min",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_size=-(2**31))),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    (
        "page-token-forged",
        lambda s: s.alice.metadata.ListFiles(
            pb.ListFilesRequest(
                page_token=base64.urlsafe_b64encode(
                    json.dumps({"c": "2999-01-01", "i": s.file.id}).encode()
                ).decode()
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    ),
    (
        "page-token-id",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_token=s.file.id)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    ),
    (
        "filter-unspecified-status",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(statuses=[Status.FILE_STATUS_UNSPECIFIED])),
        Code.INVALID_ARGUMENT,
        "INVALID_FILTER",
    ),
    (
        "filter-empty-range",
        lambda s: s.alice.metadata.ListFiles(
            pb.ListFilesRequest(created_after=s.file.create_time, created_before=s.file.create_time)
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_FILTER",
    ),
    (
        "filter-other-owner",
        lambda s: s.bob.metadata.ListFiles(pb.ListFilesRequest(owner="alice")),
        Code.INVALID_ARGUMENT,
        "INVALID_FILTER",
    ),
    (
        "filter-huge-prefix",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(name_prefix="x" * 5000)),
        Code.INVALID_ARGUMENT,
        "INVALID_FILTER",
    ),
    # Labels.
    (
        "create-65-labels",
        lambda s: s.alice.metadata.CreateFile(_new(labels=_TOO_MANY_LABELS)),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "create-label-value-256",
        lambda s: s.alice.metadata.CreateFile(_new(labels={"k": "v" * 256})),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "create-label-key-64",
        lambda s: s.alice.metadata.CreateFile(_new(labels={"k" * 64: "v"})),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "create-label-key-upper",
        lambda s: s.alice.metadata.CreateFile(_new(labels={"Key": "v"})),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "create-label-value-nul",
        lambda s: s.alice.metadata.CreateFile(_new(labels={"k": "a\x00b"})),
        Code.INVALID_ARGUMENT,
        "INVALID_STRING",
    ),
    (
        "update-65-labels",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["labels"], labels=_TOO_MANY_LABELS)),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "update-label-value-1mib",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["labels"], labels={"k": "v" * (1 << 20)})),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    # Other declared values.
    (
        "create-empty-name",
        lambda s: s.alice.metadata.CreateFile(_new(name="  ")),
        Code.INVALID_ARGUMENT,
        "INVALID_NAME",
    ),
    (
        "create-bidi-name",
        lambda s: s.alice.metadata.CreateFile(_new(name="invoice\u202efdp.exe")),
        Code.INVALID_ARGUMENT,
        "INVALID_NAME",
    ),
    (
        "update-long-name",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["name"], name="x" * 256)),
        Code.INVALID_ARGUMENT,
        "INVALID_NAME",
    ),
    (
        "create-negative-size",
        lambda s: s.alice.metadata.CreateFile(_new(size=-1)),
        Code.INVALID_ARGUMENT,
        "INVALID_SIZE",
    ),
    (
        "create-bad-type",
        lambda s: s.alice.metadata.CreateFile(_new(declared_content_type="text/html; x")),
        Code.INVALID_ARGUMENT,
        "INVALID_CONTENT_TYPE",
    ),
    (
        "create-bad-sha256",
        lambda s: s.alice.metadata.CreateFile(_new(sha256="ABC")),
        Code.INVALID_ARGUMENT,
        "INVALID_SHA256",
    ),
    (
        "begin-part-checksum-for-a-single-put",
        lambda s: s.alice.metadata.BeginUpload(
            _begin_with_checksum(resources_pb2.UPLOAD_KIND_SINGLE, resources_pb2.CHECKSUM_ALGORITHM_CRC32)
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_CHECKSUM_ALGORITHM",
    ),
    (
        "begin-unknown-kind",
        lambda s: s.alice.metadata.BeginUpload(
            _begin_with_checksum(42, resources_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED)  # type: ignore[arg-type]
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ENUM_VALUE",
    ),
    (
        "begin-unknown-part-checksum",
        lambda s: s.alice.metadata.BeginUpload(
            _begin_with_checksum(resources_pb2.UPLOAD_KIND_MULTIPART, 9)  # type: ignore[arg-type]
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ENUM_VALUE",
    ),
    (
        "grant-past-expiry",
        lambda s: s.alice.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(
                    file_id=s.file.id,
                    principal="bob",
                    permission=resources_pb2.PERMISSION_READ,
                    expire_time=Timestamp(seconds=1),
                )
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_EXPIRY",
    ),
    (
        "grant-no-permission",
        lambda s: s.alice.metadata.CreateGrant(
            pb.CreateGrantRequest(grant=resources_pb2.Grant(file_id=s.file.id, principal="bob"))
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_PERMISSION",
    ),
    (
        "grant-unknown-permission",
        lambda s: s.alice.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(file_id=s.file.id, principal="bob", permission=9)  # type: ignore[arg-type]
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ENUM_VALUE",
    ),
    (
        "grant-no-principal",
        lambda s: s.alice.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(file_id=s.file.id, permission=resources_pb2.PERMISSION_READ)
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_PRINCIPAL",
    ),
    (
        "transition-unspecified",
        lambda s: s.service.TransitionFile(pb.TransitionFileRequest(file_id=s.file.id, tenant=s.tenant)),
        Code.INVALID_ARGUMENT,
        "INVALID_STATUS",
    ),
    (
        "transition-illegal",
        lambda s: s.service.TransitionFile(
            pb.TransitionFileRequest(file_id=s.file.id, tenant=s.tenant, status=Status.FILE_STATUS_READY)
        ),
        Code.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
    ),
    (
        "begin-negative-size",
        lambda s: s.service.BeginUpload(begin_upload_request(s.tenant, "alice", -1)),
        Code.INVALID_ARGUMENT,
        "INVALID_SIZE",
    ),
    (
        "begin-empty-multipart",
        lambda s: s.service.BeginUpload(_begin_empty_multipart(s.tenant)),
        Code.INVALID_ARGUMENT,
        "INVALID_SIZE",
    ),
    (
        "begin-multipart-without-its-storage-upload",
        lambda s: s.service.BeginUpload(_begin_multipart(s.tenant, storage_upload_id="")),
        Code.INVALID_ARGUMENT,
        "INVALID_STORAGE_UPLOAD_ID",
    ),
    (
        "begin-single-put-with-a-storage-upload",
        lambda s: s.service.BeginUpload(
            _begin_single(s.tenant, file_id=str(uuid.uuid4()), storage_upload_id="u")
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_STORAGE_UPLOAD_ID",
    ),
    (
        "begin-storage-upload-id-too-long",
        lambda s: s.service.BeginUpload(_begin_multipart(s.tenant, storage_upload_id="u" * 1025)),
        Code.INVALID_ARGUMENT,
        "INVALID_STORAGE_UPLOAD_ID",
    ),
    (
        "begin-storage-upload-without-a-file-id",
        lambda s: s.service.BeginUpload(_begin_multipart(s.tenant, file_id="")),
        Code.INVALID_ARGUMENT,
        "INVALID_FILE_ID",
    ),
    (
        "begin-file-id-not-canonical",
        lambda s: s.service.BeginUpload(_begin_multipart(s.tenant, file_id=str(uuid.uuid4()).upper())),
        Code.INVALID_ARGUMENT,
        "INVALID_FILE_ID",
    ),
    (
        "begin-file-id-not-a-uuid",
        lambda s: s.service.BeginUpload(_begin_single(s.tenant, file_id="../other-tenant/file")),
        Code.INVALID_ARGUMENT,
        "INVALID_FILE_ID",
    ),
    (
        "attach-storage-upload-is-served-no-more",
        lambda s: s.service.AttachStorageUpload(
            pb.AttachStorageUploadRequest(upload_id=_UNKNOWN_ID, tenant=s.tenant, storage_upload_id="u")
        ),
        Code.UNIMPLEMENTED,
        "NOT_IMPLEMENTED_YET",
    ),
    (
        "begin-file-id-in-use",
        lambda s: s.service.BeginUpload(_begin_single(s.tenant, file_id=s.file.id)),
        Code.ALREADY_EXISTS,
        "FILE_ID_IN_USE",
    ),
    (
        "begin-file-id-from-a-user",
        lambda s: s.alice.metadata.BeginUpload(_begin_single("", file_id=str(uuid.uuid4()))),
        Code.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    ),
]


@pytest.fixture
async def scene(client_for: ClientFactory, service_metadata: MetadataStub, tenant: str) -> Scene:
    alice = client_for("alice", tenant)
    file = await create_file(alice.metadata, name="precious.txt", labels={"keep": "me"})
    await alice.metadata.CreateGrant(
        pb.CreateGrantRequest(
            grant=resources_pb2.Grant(
                file_id=file.id, principal="carol", permission=resources_pb2.PERMISSION_READ
            )
        )
    )
    return Scene(
        tenant=tenant,
        file=file,
        alice=alice,
        bob=client_for("bob", tenant),
        mallory=client_for("mallory", f"{tenant}-evil"),
        service=service_metadata,
    )


@pytest.mark.parametrize("case", _BAD_CASES, ids=[case[0] for case in _BAD_CASES])
async def test_bad_input_is_refused_with_a_reason_and_changes_nothing(
    stack: Stack,
    scene: Scene,
    case: tuple[str, Callable[[Scene], Awaitable[object]], grpc.StatusCode, str],
) -> None:
    _, call, code, reason = case
    await refused_without_change(stack, scene.tenants, call(scene), code, reason)


#: Calls on a file id by a user of another tenant.
_PROBES: list[tuple[str, Callable[[Client, str], Awaitable[object]]]] = [
    ("get", lambda stranger, file_id: stranger.metadata.GetFile(pb.GetFileRequest(file_id=file_id))),
    ("update", lambda stranger, file_id: stranger.metadata.UpdateFile(_update(file_id, ["name"], name="x"))),
    ("delete", lambda stranger, file_id: stranger.metadata.DeleteFile(pb.DeleteFileRequest(file_id=file_id))),
    (
        "authorize-read",
        lambda stranger, file_id: stranger.metadata.AuthorizeRead(pb.AuthorizeReadRequest(file_id=file_id)),
    ),
    (
        "list-grants",
        lambda stranger, file_id: stranger.metadata.ListGrants(pb.ListGrantsRequest(file_id=file_id)),
    ),
]


@pytest.mark.parametrize("probe", [case[1] for case in _PROBES], ids=[case[0] for case in _PROBES])
async def test_not_found_gives_no_hint_that_another_tenants_file_exists(
    client_for: ClientFactory, tenant: str, probe: Callable[[Client, str], Awaitable[object]]
) -> None:
    alice, mallory = client_for("alice", tenant), client_for("mallory", f"{tenant}-evil")
    file = await create_file(alice.metadata)
    unknown = str(uuid.uuid4())
    existing, missing = await rpc_error(probe(mallory, file.id)), await rpc_error(probe(mallory, unknown))
    assert (existing.code, existing.reason, existing.domain) == (
        missing.code,
        missing.reason,
        missing.domain,
    )
    assert str(existing).replace(file.id, "ID") == str(missing).replace(unknown, "ID")
    assert {k: v.replace(file.id, "ID") for k, v in existing.metadata.items()} == {
        k: v.replace(unknown, "ID") for k, v in missing.metadata.items()
    }
