"""Dedup against the real stack: a content digest is no credential, and storage still keeps one copy.

Only the owner of content the tenant holds gets CreateUpload's DEDUP answer (no bytes move); anyone
else who declares the digest gets an ordinary upload and must send the bytes, and once the processor
has verified them the new file shares the tenant's copy and its own is deleted. Each test works in a
tenant of its own, so bucket listings and quotas see only what the test made.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from filestore.metadata.fsck import FindingKind, FsckOptions
from filestore.metadata.fsck import run as fsck
from filestore.server.storage import ObjectStore
from filestore.stack import Stack
from filestore.v1 import (
    download_service_pb2,
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
)
from tests.storage import admin_store
from tests.support import (
    Client,
    ClientFactory,
    StatusEvents,
    connect_nats,
    get_file,
    post_form,
    put_presigned,
    rpc_error,
    service_token,
    stack_channel,
)

Kind = resources_pb2.UploadKind
Status = resources_pb2.FileStatus
#: What every upload here declares: the tests are about who may skip sending bytes, not about types.
CONTENT_TYPE = "application/octet-stream"


@dataclass
class Tenant:
    """A tenant of the test's own, its storage as the operator sees it, and the catalogue as a
    service sees it."""

    name: str
    stack: Stack
    storage: ObjectStore
    metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub

    def own_key(self, file_id: str) -> str:
        return f"originals/{self.name}/{file_id}"

    async def stored_originals(self) -> dict[str, bytes]:
        """Every object under the tenant's originals, with its bytes."""

        def read(key: str) -> bytes:
            return b"".join(self.storage.stream(key, chunk_bytes=64 * 1024))

        return {
            stored.key: await asyncio.to_thread(read, stored.key)
            async for page in self.storage.list_objects(f"originals/{self.name}/")
            for stored in page
        }

    async def used_bytes(self, owner: str) -> int:
        quota = await self.metadata.GetQuota(
            metadata_service_pb2.GetQuotaRequest(tenant=self.name, owner=owner)
        )
        return quota.used_bytes


@pytest.fixture
async def tenant(stack: Stack) -> AsyncIterator[Tenant]:
    token = service_token(stack)
    channel = stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token)
    yield Tenant(
        name=f"dedup-{uuid.uuid4().hex[:12]}",
        stack=stack,
        storage=admin_store(stack),
        metadata=metadata_service_pb2_grpc.MetadataServiceStub(channel),
    )
    await channel.close()


async def create_upload(
    client: Client, body: bytes, *, declare: bool = True, kind: int = Kind.UPLOAD_KIND_SINGLE
) -> upload_service_pb2.CreateUploadResponse:
    response: upload_service_pb2.CreateUploadResponse = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name="data.bin",
            size=len(body),
            content_type=CONTENT_TYPE,
            sha256=hashlib.sha256(body).hexdigest() if declare else "",
            kind=kind,  # type: ignore[arg-type]
        )
    )
    return response


async def send(created: upload_service_pb2.CreateUploadResponse, body: bytes) -> None:
    """The client's part of an upload of any kind: the bytes to storage as the broker said."""
    upload = created.upload
    if upload.kind == Kind.UPLOAD_KIND_POST_POLICY:
        answer = await post_form(upload.request, body)
    elif upload.kind == Kind.UPLOAD_KIND_MULTIPART:
        [part] = upload.part_urls
        answer = await put_presigned(part.request, body)
    else:
        answer = await put_presigned(upload.request, body)
    assert answer.status_code in (200, 201, 204), answer.text


async def upload_ready(
    client: Client,
    body: bytes,
    events: StatusEvents,
    *,
    declare: bool = True,
    kind: int = Kind.UPLOAD_KIND_SINGLE,
) -> resources_pb2.File:
    created = await create_upload(client, body, declare=declare, kind=kind)
    assert created.upload.kind == kind
    await send(created, body)
    await client.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id))
    assert (await events.wait_for(created.file.id)).status == Status.FILE_STATUS_READY
    return await get_file(client, created.file.id)


async def download(client: Client, file_id: str) -> bytes:
    url = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file_id))
    async with httpx.AsyncClient(timeout=30) as http:
        got = await http.get(url.url)
    assert got.status_code == 200, got.text
    return got.content


async def delete(client: Client, file_id: str) -> None:
    await client.metadata.DeleteFile(metadata_service_pb2.DeleteFileRequest(file_id=file_id))


def shape(created: upload_service_pb2.CreateUploadResponse) -> tuple[object, ...]:
    """What a CreateUpload answer says about the content, leaving out what differs per upload."""
    upload, file = created.upload, created.file
    return (
        upload.kind,
        upload.state,
        file.status,
        file.deduplicated,
        upload.request.method,
        sorted(upload.request.headers),
        sorted(upload.request.form_fields),
        len(upload.part_urls),
    )


@pytest.mark.parametrize(
    "kind",
    [
        Kind.UPLOAD_KIND_UNSPECIFIED,
        Kind.UPLOAD_KIND_SINGLE,
        Kind.UPLOAD_KIND_POST_POLICY,
        Kind.UPLOAD_KIND_MULTIPART,
    ],
    ids=["unspecified", "single", "post-policy", "multipart"],
)
async def test_a_digest_alone_gets_an_ordinary_upload_as_if_nobody_held_the_content(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant, kind: int
) -> None:
    body = os.urandom(4096)
    await upload_ready(client_for("alice", tenant.name), body, status_events)
    bob = client_for("bob", tenant.name)
    # Bob learnt alice's digest (a log line, a shared link): it gets him what any new content gets.
    claimed = await create_upload(bob, body, kind=kind)
    unheld = await create_upload(bob, os.urandom(4096), kind=kind)
    assert claimed.upload.kind != Kind.UPLOAD_KIND_DEDUP
    assert claimed.upload.state == resources_pb2.UPLOAD_STATE_OPEN
    assert shape(claimed) == shape(unheld)


async def test_a_digest_alone_gets_neither_a_ready_file_nor_the_bytes(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant
) -> None:
    body = os.urandom(4096)
    original = await upload_ready(client_for("alice", tenant.name), body, status_events)
    bob = client_for("bob", tenant.name)
    claimed = await create_upload(bob, body)
    assert claimed.upload.kind == Kind.UPLOAD_KIND_SINGLE
    assert claimed.file.status == Status.FILE_STATUS_PENDING

    async def refusals() -> tuple[str, str]:
        completion = await rpc_error(
            bob.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=claimed.upload.id))
        )
        read = await rpc_error(
            bob.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=claimed.file.id))
        )
        return completion.reason, read.reason

    assert await refusals() == ("OBJECT_MISSING", "FILE_PENDING")
    # Other bytes through his URL: storage checks them against the digest signed into it.
    refused = await put_presigned(claimed.upload.request, os.urandom(4096))
    assert refused.status_code == 400, refused.text
    assert await refusals() == ("OBJECT_MISSING", "FILE_PENDING")
    assert (await get_file(bob, claimed.file.id)).status == Status.FILE_STATUS_PENDING
    # Alice's file is not his to read either.
    stranger = await rpc_error(
        bob.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=original.id))
    )
    assert stranger.reason == "FILE_NOT_FOUND"


async def test_a_form_with_other_bytes_under_a_known_digest_is_quarantined(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant
) -> None:
    # A POST policy cannot pin a digest (S3 forms have no checksum condition): the bytes are
    # verified after the upload, and bytes other than the declared ones never become a file.
    body = os.urandom(4096)
    await upload_ready(client_for("alice", tenant.name), body, status_events)
    bob = client_for("bob", tenant.name)
    claimed = await create_upload(bob, body, kind=Kind.UPLOAD_KIND_POST_POLICY)
    await send(claimed, os.urandom(4096))
    await bob.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=claimed.upload.id))
    ended = await status_events.wait_for(claimed.file.id)
    assert (ended.status, ended.reason) == (Status.FILE_STATUS_QUARANTINED, "CHECKSUM_MISMATCH")
    refused = await rpc_error(
        bob.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=claimed.file.id))
    )
    assert refused.reason == "FILE_QUARANTINED"


async def test_owners_skip_the_upload_others_send_the_bytes_and_storage_keeps_one_copy(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant
) -> None:
    body = os.urandom(6000)
    digest = hashlib.sha256(body).hexdigest()
    for owner in ("", "alice", "bob", "carol"):
        await tenant.metadata.SetQuota(
            metadata_service_pb2.SetQuotaRequest(tenant=tenant.name, owner=owner, limit_bytes=10**9)
        )
    alice, bob, carol = (client_for(name, tenant.name) for name in ("alice", "bob", "carol"))
    original = await upload_ready(alice, body, status_events)
    assert not original.deduplicated
    shared_key = tenant.own_key(original.id)

    # Alice owns the content: her digest is enough, no bytes move.
    again = await create_upload(alice, body)
    assert (again.upload.kind, again.upload.state) == (
        Kind.UPLOAD_KIND_DEDUP,
        resources_pb2.UPLOAD_STATE_COMPLETED,
    )
    assert not again.upload.request.url
    assert not again.upload.part_urls
    assert again.file.deduplicated
    assert (await status_events.wait_for(again.file.id)).status == Status.FILE_STATUS_READY

    # Bob sends the same bytes without declaring any digest, carol in a multipart upload: once
    # verified, each file shares the tenant's copy and its own object is gone.
    bobs = await upload_ready(bob, body, status_events, declare=False)
    carols = await upload_ready(carol, body, status_events, kind=Kind.UPLOAD_KIND_MULTIPART)
    for file in (bobs, carols):
        assert file.deduplicated
        assert file.sha256 == digest
        # The steps after the integrity check read the shared copy, not the one being deleted.
        results = await tenant.metadata.ListProcessingResults(
            metadata_service_pb2.ListProcessingResultsRequest(file_id=file.id, tenant=tenant.name)
        )
        outcomes = {result.step: result for result in results.results}
        assert outcomes["integrity"].details["deduplicated"] == "true"
        assert {step: result.attempts for step, result in outcomes.items()} == {
            "integrity": 1,
            "sniff": 1,
            "scan": 1,
        }
    assert await tenant.stored_originals() == {shared_key: body}

    files = {"alice": original, "alice again": again.file, "bob": bobs, "carol": carols}
    clients = {"alice": alice, "alice again": alice, "bob": bob, "carol": carol}
    for name, file in files.items():
        assert await download(clients[name], file.id) == body, name
    # Every file counts against its owner's quota, shared or not (as a DEDUP answer always did).
    assert [await tenant.used_bytes(owner) for owner in ("", "alice", "bob", "carol")] == [
        4 * len(body),
        2 * len(body),
        len(body),
        len(body),
    ]

    # The first copy's owner deletes it first, then the later ones go; the bytes stay until the last.
    for gone in ("alice", "bob", "carol"):
        await delete(clients[gone], files[gone].id)
        del files[gone]
        for name, file in files.items():
            assert await download(clients[name], file.id) == body, f"{name} after {gone} deleted"
        assert await tenant.stored_originals() == {shared_key: body}
    await delete(alice, again.file.id)
    assert await tenant.stored_originals() == {}
    assert [await tenant.used_bytes(owner) for owner in ("", "alice", "bob", "carol")] == [0, 0, 0, 0]


async def test_an_owners_multipart_create_of_held_content_leaves_no_storage_upload(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant
) -> None:
    body = os.urandom(6000)
    alice = client_for("alice", tenant.name)
    original = await upload_ready(alice, body, status_events)
    # The broker creates a multipart upload's storage upload before BeginUpload decides on dedup (so
    # that one transaction records both); a DEDUP answer holds none, and the broker aborts its own.
    again = await create_upload(alice, body, kind=Kind.UPLOAD_KIND_MULTIPART)
    assert (again.upload.kind, again.file.deduplicated, len(again.upload.part_urls)) == (
        Kind.UPLOAD_KIND_DEDUP,
        True,
        0,
    )
    open_uploads = [
        upload
        async for page in tenant.storage.list_multipart_uploads(f"originals/{tenant.name}/")
        for upload in page
    ]
    assert open_uploads == []
    assert await tenant.stored_originals() == {tenant.own_key(original.id): body}
    assert (await status_events.wait_for(again.file.id)).status == Status.FILE_STATUS_READY


async def test_the_later_copy_deleted_first_leaves_the_first_readable(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant
) -> None:
    body = os.urandom(3000)
    alice, bob = client_for("alice", tenant.name), client_for("bob", tenant.name)
    original = await upload_ready(alice, body, status_events)
    copy = await upload_ready(bob, body, status_events)
    assert copy.deduplicated
    await delete(bob, copy.id)
    assert await download(alice, original.id) == body
    assert await tenant.stored_originals() == {tenant.own_key(original.id): body}
    # Bob's content is gone with his file: his digest alone gets him nothing again.
    assert (await create_upload(bob, body)).upload.kind == Kind.UPLOAD_KIND_SINGLE
    await delete(alice, original.id)
    assert await tenant.stored_originals() == {}


class Acks:
    """The processor's acknowledgements, as JetStream receives them: a delivery is handled once
    its stream sequence is acknowledged (the ack's subject names it; its body is empty)."""

    def __init__(self) -> None:
        self._acked: set[int] = set()
        self._changed = asyncio.Condition()

    async def on_message(self, message: Msg) -> None:
        # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
        tokens = message.subject.split(".")
        if message.data in (b"", b"+ACK") and len(tokens) >= 9:
            async with self._changed:
                self._acked.add(int(tokens[5]))
                self._changed.notify_all()

    async def wait_for(self, sequence: int) -> None:
        async def acked() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: sequence in self._acked)

        await asyncio.wait_for(acked(), 60)


@pytest.mark.local_stack  # reads the stack's database (the reconciler)
async def test_a_form_submitted_again_after_dedup_is_an_orphan_not_the_files_content(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant
) -> None:
    # A browser form can be submitted again until its policy expires. Once the file was found to be
    # content the tenant held, its own key is none of its business: the bytes written there must
    # neither be served nor get the file quarantined; they are an orphan for the reconciler.
    body = os.urandom(3000)
    alice, bob = client_for("alice", tenant.name), client_for("bob", tenant.name)
    original = await upload_ready(alice, body, status_events)
    created = await create_upload(bob, body, declare=False, kind=Kind.UPLOAD_KIND_POST_POLICY)
    await send(created, body)
    await bob.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id))
    assert (await status_events.wait_for(created.file.id)).status == Status.FILE_STATUS_READY
    assert (await get_file(bob, created.file.id)).deduplicated
    own_key = tenant.own_key(created.file.id)

    acks = Acks()
    connection = await connect_nats(tenant.stack.endpoints)
    try:
        await connection.subscribe("$JS.ACK.FILES.processor-pipeline.>", cb=acks.on_message)
        announced = await connection.jetstream().subscribe(
            "files.object.created", ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        replacement = os.urandom(3000)
        await send(created, replacement)
        # Storage's announcement of the object just written, and its handling by the processor.
        etag = hashlib.md5(replacement).hexdigest()  # S3's ETag of a single PUT
        while True:
            message = await announced.next_msg(timeout=60)
            event = events_pb2.ObjectCreated.FromString(message.data)
            if event.key == own_key and event.etag.strip('"') == etag:
                break
        assert event.source == events_pb2.EVENT_SOURCE_SEAWEEDFS
        await acks.wait_for(message.metadata.sequence.stream)
    finally:
        await connection.close()

    file = await get_file(bob, created.file.id)
    assert (file.status, file.deduplicated) == (Status.FILE_STATUS_READY, True)
    assert await download(bob, created.file.id) == body
    assert await tenant.stored_originals() == {tenant.own_key(original.id): body, own_key: replacement}
    report = await fsck(
        FsckOptions(
            database_url=tenant.stack.endpoints.database_url,
            s3=tenant.stack.endpoints.admin_s3_settings(),
            grace=timedelta(0),
            tenants=(tenant.name,),
        )
    )
    assert {(finding.kind, finding.subject) for finding in report.findings} == {
        (FindingKind.ORPHAN_OBJECT, own_key)
    }


async def test_replaced_shared_content_quarantines_every_file_reading_it(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant
) -> None:
    # Alice's browser form can be submitted again until its policy expires, and her object is the
    # copy Bob's file was deduplicated onto. New bytes there must not reach Bob as his verified file.
    body = os.urandom(3000)
    alice, bob, carol = (client_for(name, tenant.name) for name in ("alice", "bob", "carol"))
    form = await create_upload(alice, body, kind=Kind.UPLOAD_KIND_POST_POLICY)
    await send(form, body)
    await alice.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=form.upload.id))
    assert (await status_events.wait_for(form.file.id)).status == Status.FILE_STATUS_READY
    shared = await upload_ready(bob, body, status_events)
    assert shared.deduplicated

    await send(form, os.urandom(3000))

    for file_id in (form.file.id, shared.id):
        changed = await status_events.wait_for_status(file_id, Status.FILE_STATUS_QUARANTINED)
        assert changed.reason == "CONTENT_CHANGED"
    refused = await rpc_error(
        bob.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=shared.id))
    )
    assert refused.reason == "FILE_QUARANTINED"
    # The replaced object is no dedup target any more: the same bytes uploaded again are a copy of
    # their own, not a reference to an object that holds something else.
    again = await upload_ready(carol, body, status_events)
    assert not again.deduplicated
    assert await download(carol, again.id) == body


async def test_completing_again_after_dedup_answers_the_completed_upload(
    client_for: ClientFactory, status_events: StatusEvents, tenant: Tenant
) -> None:
    # A client that retries CompleteUpload after its file was deduplicated (its own object deleted
    # meanwhile) gets the completed upload, not a complaint that its object is missing.
    body = os.urandom(3000)
    await upload_ready(client_for("alice", tenant.name), body, status_events)
    bob = client_for("bob", tenant.name)
    created = await create_upload(bob, body)
    await send(created, body)
    complete = upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id)
    await bob.upload.CompleteUpload(complete)
    assert (await status_events.wait_for(created.file.id)).status == Status.FILE_STATUS_READY
    again = await bob.upload.CompleteUpload(complete)
    assert again.upload.state == resources_pb2.UPLOAD_STATE_COMPLETED
    assert (again.file.status, again.file.deduplicated) == (Status.FILE_STATUS_READY, True)
