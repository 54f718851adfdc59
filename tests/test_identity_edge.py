"""Identities reach object keys: a token's claims and a service's tenant fields are checked against
the grammar of resources.proto at the edge of every service, and nothing is ever made for a tenant
outside it (keys such as ``originals/x/y/<id>`` inside another tenant's prefix, or ``originals/../<id>``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import grpc

from filestore.core.auth import mint_token
from filestore.core.errors import FilestoreError, error_from_rpc
from filestore.stack import Stack
from filestore.v1 import (
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.catalogue import catalogue_snapshot
from tests.proto_walk import rpcs
from tests.storage import admin_storage
from tests.support import ClientFactory, bare_channel, rpc_error, stack_channel

C = grpc.StatusCode
#: (claim, tenant, subject) of tokens signed with the stack's own secret whose claims break the grammar.
BAD_CLAIMS = [
    ("tenant", "x/y", "mallory"),
    ("tenant", "..", "mallory"),
    ("tenant", "../acme", "mallory"),
    ("tenant", "a\x00b", "mallory"),
    ("tenant", "t" * 64, "mallory"),
    ("tenant", "evil corp", "mallory"),
    ("tenant", "*", "mallory"),  # any tenant, without the service role
    ("sub", "acme", "m" * 256),
    ("sub", "acme", "mal\nlory"),
]
BAD_TENANTS = sorted({tenant for claim, tenant, _ in BAD_CLAIMS if claim == "tenant"} | {"a/b", "t" * 300})


async def _rows_of(stack: Stack, tenants: list[str]) -> object:
    """The catalogue rows of ``tenants``. PostgreSQL cannot even be asked about a tenant holding NUL
    (no row can hold one there); SQLite can, and is."""
    if not stack.endpoints.database_url.startswith("sqlite"):
        tenants = [tenant for tenant in tenants if "\x00" not in tenant]
    return await catalogue_snapshot(stack, *tenants)


def _bucket_keys(stack: Stack) -> list[str]:
    endpoints = stack.endpoints
    storage = admin_storage(stack)
    listed = storage.list_objects_v2(Bucket=endpoints.bucket)
    uploads = storage.list_multipart_uploads(Bucket=endpoints.bucket).get("Uploads", [])
    return sorted([item["Key"] for item in listed.get("Contents", [])] + [item["Key"] for item in uploads])


async def test_a_token_whose_claims_break_the_grammar_is_refused_by_every_rpc(stack: Stack) -> None:
    """Every RPC of every service, with an empty request: the claim is refused before the request
    is looked at. And the upload that such a token could start before, with its tenant in the
    object key, is refused too and leaves no row or key behind."""
    before = (await _rows_of(stack, BAD_TENANTS), _bucket_keys(stack))
    failures = []
    for claim, tenant, subject in BAD_CLAIMS:
        token = mint_token(stack.endpoints.auth_secret, subject=subject, tenant=tenant)
        metadata = (("authorization", f"Bearer {token}"),)
        for rpc in rpcs():
            address = getattr(stack.endpoints, f"{rpc.service.name.removesuffix('Service').lower()}_addr")
            async with bare_channel(stack.endpoints, address) as channel:
                try:
                    await channel.unary_unary(rpc.path)(
                        rpc.request_class().SerializeToString(), metadata=metadata
                    )
                    got: object = "OK"
                except grpc.RpcError as raw:
                    error = error_from_rpc(raw)
                    got = (error.code, error.reason, error.metadata)
            if got != (C.UNAUTHENTICATED, "TOKEN_CLAIM_INVALID", {"claim": claim}):
                failures.append(
                    f"{rpc} with {claim} {(tenant if claim == 'tenant' else subject)[:20]!r}: {got}"
                )
        async with bare_channel(stack.endpoints, stack.endpoints.upload_addr) as channel:
            upload = upload_service_pb2_grpc.UploadServiceStub(channel)
            error = await rpc_error(
                upload.CreateUpload(
                    upload_service_pb2.CreateUploadRequest(name="a.txt", size=5, content_type="text/plain"),
                    metadata=metadata,
                )
            )
            assert (error.code, error.reason) == (C.UNAUTHENTICATED, "TOKEN_CLAIM_INVALID")
    assert failures == [], "\n".join(failures)
    assert (await _rows_of(stack, BAD_TENANTS), _bucket_keys(stack)) == before


async def test_a_service_token_names_every_tenant_and_a_user_token_does_not(
    stack: Stack, service_metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub
) -> None:
    tenant = f"quota-{uuid.uuid4().hex[:8]}"
    quota = await service_metadata.SetQuota(
        metadata_service_pb2.SetQuotaRequest(tenant=tenant, limit_bytes=7)
    )
    assert (quota.tenant, quota.limit_bytes) == (tenant, 7)
    user_everywhere = mint_token(stack.endpoints.auth_secret, subject="mallory", tenant="*")
    async with stack_channel(
        stack.endpoints, stack.endpoints.metadata_addr, token=lambda: user_everywhere
    ) as channel:
        error = await rpc_error(
            metadata_service_pb2_grpc.MetadataServiceStub(channel).GetQuota(
                metadata_service_pb2.GetQuotaRequest()
            )
        )
    assert (error.code, error.reason, error.metadata) == (
        C.UNAUTHENTICATED,
        "TOKEN_CLAIM_INVALID",
        {"claim": "tenant"},
    )


def _tenant_requests(
    tenant: str,
) -> list[tuple[str, Callable[[metadata_service_pb2_grpc.MetadataServiceAsyncStub], object]]]:
    file = resources_pb2.File(
        tenant=tenant, owner="bob", name="a.txt", size=5, declared_content_type="text/plain"
    )
    return [
        (
            "SetQuota",
            lambda m: m.SetQuota(metadata_service_pb2.SetQuotaRequest(tenant=tenant, limit_bytes=10)),
        ),
        ("GetQuota", lambda m: m.GetQuota(metadata_service_pb2.GetQuotaRequest(tenant=tenant))),
        ("ListFiles", lambda m: m.ListFiles(metadata_service_pb2.ListFilesRequest(tenant=tenant))),
        ("CreateFile", lambda m: m.CreateFile(metadata_service_pb2.CreateFileRequest(file=file))),
        (
            "GetFile",
            lambda m: m.GetFile(
                metadata_service_pb2.GetFileRequest(file_id=str(uuid.uuid4()), tenant=tenant)
            ),
        ),
    ]


async def test_a_service_naming_a_tenant_outside_the_grammar_is_refused(
    stack: Stack, service_metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub
) -> None:
    """Tenant fields of metadata requests, where services name the tenant they act for: refused as
    INVALID_TENANT. SetQuota and CreateFile once made rows for a tenant that no token can name."""
    tenants = [*BAD_TENANTS, "*"]
    before = (await _rows_of(stack, tenants), _bucket_keys(stack))
    failures = []
    for tenant in tenants:
        for name, call in _tenant_requests(tenant):
            error: FilestoreError = await rpc_error(call(service_metadata))  # type: ignore[arg-type]
            got = (error.code, error.reason, error.metadata.get("field"))
            field = "file.tenant" if name == "CreateFile" else "tenant"
            if got != (C.INVALID_ARGUMENT, "INVALID_TENANT", field):
                failures.append(f"{name} naming {tenant[:20]!r}: {got}")
    assert failures == [], "\n".join(failures)
    assert (await _rows_of(stack, tenants), _bucket_keys(stack)) == before


async def test_a_subject_of_255_characters_keeps_its_request_ids(client_for: ClientFactory) -> None:
    """Replays are keyed by method and subject; with the longest subject the grammar allows, that
    key outgrew its column on PostgreSQL and CreateFile with a request_id answered INTERNAL."""
    tenant = f"long-{os.urandom(4).hex()}"
    client = client_for("s" * 255, tenant)
    request = metadata_service_pb2.CreateFileRequest(
        file=resources_pb2.File(name="a.txt", size=5, declared_content_type="text/plain"),
        request_id=str(uuid.uuid4()),
    )
    first = await client.metadata.CreateFile(request)
    assert first.owner == "s" * 255
    assert (await client.metadata.CreateFile(request)).id == first.id
    other = client_for("s" * 254 + "t", tenant)
    assert (await other.metadata.CreateFile(request)).id != first.id  # another subject, another key
