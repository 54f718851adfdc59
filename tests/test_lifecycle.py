"""Tiers and lifecycle against a real stack with two SeaweedFS regions: transitions to a colder
storage class and to another store (visible in storage's StorageClass and in the catalogue), expiry as
a soft delete then a purge after the grace (a deduplicated blob another file still reads is kept),
legal hold blocking both, a dry run that changes nothing, a run stopped halfway and run again reaching
the same end state, and an archived file's download refused until RestoreFile brings it back.

The job runs in the test's process (as ``filestore-lifecycle run`` does) with a clock of the test's
own: rules of days are evaluated at ``now`` + days, nothing sleeps. The stack's processors run the
job too, on the real clock, which makes none of these files due (they are seconds old).
One stack for the module (SQLite): every test uses a tenant of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import nats
import pytest
from botocore.exceptions import ClientError
from nats.js import JetStreamContext

from filestore.core.channels import insecure_channel
from filestore.metadata.fsck.reconciler import run as run_reconciler
from filestore.processor.lifecycle import LifecycleJob
from filestore.processor.lifecycle_cli import main as lifecycle_main
from filestore.server import events
from filestore.server.storage import ObjectStore, StoreConfig
from filestore.stack import Stack
from filestore.stack.regions import SECOND_STORE
from filestore.v1 import (
    download_service_pb2,
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2,
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
)

pytestmark = pytest.mark.local_stack

DAY = 86_400
Kind = metadata_service_pb2.LifecycleActionKind
State = metadata_service_pb2.LifecycleActionState


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with two_region_stack(tmp_path_factory.mktemp("stack-lifecycle")) as started:
        yield started


@pytest.fixture(scope="module")
async def clients(stack: Stack) -> AsyncIterator[StackClients]:
    made = StackClients(stack)
    yield made
    await made.close()


@pytest.fixture(scope="module")
async def admin(stack: Stack) -> AsyncIterator[metadata_service_pb2_grpc.MetadataServiceAsyncStub]:
    token = service_token(stack)
    channel = insecure_channel(stack.endpoints.metadata_addr, token=lambda: token)
    yield metadata_service_pb2_grpc.MetadataServiceStub(channel)
    await channel.close()


@pytest.fixture(scope="module")
async def jetstream(stack: Stack) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(stack.endpoints.nats_url)
    yield connection.jetstream()
    await connection.close()


@pytest.fixture
async def status_events(stack: Stack) -> AsyncIterator[StatusEvents]:
    async with collected_status_events(stack) as collected:
        yield collected


def make_job(
    stack: Stack,
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    jetstream: JetStreamContext,
    *,
    lease_s: int = 300,
) -> LifecycleJob:
    """The job as a processor runs it, with the processor's own storage keys for each store."""
    stores = {}
    for name, region in ((DEFAULT, stack), (SECOND_STORE, stack.regions[0])):
        settings = region.endpoints.admin_s3_settings()
        access_key, secret_key = region.endpoints.credentials.service_s3_keys["processor"]
        config = StoreConfig.from_settings(settings, name=name)
        stores[name] = ObjectStore(
            StoreConfig(
                name=name,
                endpoint=config.endpoint,
                public_endpoint=config.public_endpoint,
                region=config.region,
                bucket=config.bucket,
                credentials=type(config.credentials)(access_key, secret_key),
            )
        )
    return LifecycleJob(admin, stores, jetstream, subjects=events.Subjects("files"), lease_s=lease_s)


async def set_rules(
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    tenant: str,
    *rules: metadata_service_pb2.LifecycleRule,
) -> None:
    await admin.SetLifecycleRules(
        metadata_service_pb2.SetLifecycleRulesRequest(
            rules=metadata_service_pb2.LifecycleRules(tenant=tenant, rules=rules)
        )
    )


async def upload(
    client: Client, status_events: StatusEvents, body: bytes, *, name: str = "report.pdf"
) -> resources_pb2.File:
    """Create (with the digest, so the owner's second copy of content is deduplicated), PUT unless
    deduplicated, complete, and wait until processed."""
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name=name, size=len(body), content_type="application/pdf", sha256=hashlib.sha256(body).hexdigest()
        )
    )
    if created.upload.kind != resources_pb2.UPLOAD_KIND_DEDUP:
        assert (await put_presigned(created.upload.request, body)).status_code == 200
        await complete_upload(client, created.upload.id)
    await status_events.wait_for_status(created.file.id, resources_pb2.FILE_STATUS_READY)
    return await get_file(client, created.file.id)


def storage_class_of(stack: Stack, store: str, key: str) -> str | None:
    client, bucket = storage_of(stack, store)
    try:
        head = client.head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    except ClientError:
        return None
    return str(head.get("StorageClass") or "STANDARD")


async def actions_of(client: Client, file_id: str) -> list[tuple[str, str, str]]:
    listed = await client.metadata.ListLifecycleActions(
        metadata_service_pb2.ListLifecycleActionsRequest(file_id=file_id)
    )
    return [(Kind.Name(a.kind)[22:], State.Name(a.state)[23:], a.rule_id) for a in listed.actions]


async def lifecycle_events(jetstream: JetStreamContext, tenant: str) -> list[events_pb2.FileLifecycleChanged]:
    """Every FileLifecycleChanged the FILES stream holds for ``tenant`` (read from the stream, so a
    publish JetStream dropped as a duplicate is not counted)."""
    subscription = await jetstream.subscribe("files.file.lifecycle", ordered_consumer=True)
    found: list[events_pb2.FileLifecycleChanged] = []
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=1.0)
            except TimeoutError:
                break
            event = events_pb2.FileLifecycleChanged.FromString(message.data)
            if event.tenant == tenant:
                found.append(event)
    finally:
        await subscription.unsubscribe()
    return found


def later(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


async def test_rules_are_checked_and_read_back(
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub, clients: StackClients
) -> None:
    tenant = fresh_tenant()
    bogus = metadata_service_pb2.LifecycleRule(
        id="cold",
        after_seconds=DAY,
        action=Kind.LIFECYCLE_ACTION_KIND_TRANSITION,
        target_storage_class="BOGUS",
    )
    error = await rpc_error(set_rules(admin, tenant, bogus))
    assert (error.reason, error.metadata.get("field")) == ("INVALID_LIFECYCLE_RULE", "target_storage_class")
    no_action = metadata_service_pb2.LifecycleRule(id="x", after_seconds=DAY)
    assert (await rpc_error(set_rules(admin, tenant, no_action))).reason == "INVALID_LIFECYCLE_RULE"
    user = clients("alice", tenant)
    denied = await rpc_error(
        user.metadata.SetLifecycleRules(
            metadata_service_pb2.SetLifecycleRulesRequest(
                rules=metadata_service_pb2.LifecycleRules(tenant=tenant)
            )
        )
    )
    assert denied.reason == "SERVICE_ROLE_REQUIRED"
    rule = metadata_service_pb2.LifecycleRule(
        id="ia",
        after_seconds=DAY,
        action=Kind.LIFECYCLE_ACTION_KIND_TRANSITION,
        target_storage_class="STANDARD_IA",
    )
    await set_rules(admin, tenant, rule)
    read = await user.metadata.GetLifecycleRules(metadata_service_pb2.GetLifecycleRulesRequest())
    assert list(read.rules) == [rule]


async def test_transitions_to_a_colder_class_then_another_store_and_a_dry_run_changes_nothing(
    stack: Stack,
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    clients: StackClients,
    jetstream: JetStreamContext,
    status_events: StatusEvents,
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    await set_rules(
        admin,
        tenant,
        metadata_service_pb2.LifecycleRule(
            id="ia",
            name_prefix="reports/",
            after_seconds=DAY,
            action=Kind.LIFECYCLE_ACTION_KIND_TRANSITION,
            target_storage_class="STANDARD_IA",
        ),
        metadata_service_pb2.LifecycleRule(
            id="offsite",
            name_prefix="reports/",
            after_seconds=10 * DAY,
            action=Kind.LIFECYCLE_ACTION_KIND_TRANSITION,
            target_store=SECOND_STORE,
            target_storage_class="STANDARD_IA",
        ),
    )
    body = os.urandom(4096)
    file = await upload(client, status_events, body, name="reports/q1.pdf")
    other = await upload(client, status_events, os.urandom(1024), name="notes/a.pdf")
    key = f"originals/{tenant}/{file.id}"
    job = make_job(stack, admin, jetstream)

    planned = await job.run(now=later(2), dry_run=True, tenant=tenant)
    assert [(a.file_id, a.kind, a.state, a.rule_id) for a in planned.actions] == [
        (file.id, Kind.LIFECYCLE_ACTION_KIND_TRANSITION, State.LIFECYCLE_ACTION_STATE_PLANNED, "ia")
    ]
    # A dry run changes nothing: not the catalogue, not storage, no log.
    assert (await get_file(client, file.id)).storage_class == "STANDARD"
    assert storage_class_of(stack, DEFAULT, key) == "STANDARD"
    assert await actions_of(client, file.id) == []

    done = await job.run(now=later(2), tenant=tenant)
    assert done.done == 1
    moved = await get_file(client, file.id)
    assert (moved.store, moved.storage_class, moved.archived) == (DEFAULT, "STANDARD_IA", False)
    assert storage_class_of(stack, DEFAULT, key) == "STANDARD_IA"
    assert (await get_file(client, other.id)).storage_class == "STANDARD"  # not selected
    assert await actions_of(client, file.id) == [("TRANSITION", "ANNOUNCED", "ia")]
    # Again at the same time: nothing is due any more.
    assert (await job.run(now=later(2), tenant=tenant)).actions == []

    # Past the second rule's age: to the other region's store, in the same class.
    await job.run(now=later(11), tenant=tenant)
    offsite = await get_file(client, file.id)
    assert (offsite.store, offsite.storage_class) == (SECOND_STORE, "STANDARD_IA")
    assert storage_class_of(stack, SECOND_STORE, key) == "STANDARD_IA"
    assert storage_class_of(stack, DEFAULT, key) is None
    url = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file.id))
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(url.url)).content == body
    announced = [
        (e.file_id, e.action, e.rule_id, e.store, e.storage_class)
        for e in await lifecycle_events(jetstream, tenant)
    ]
    assert announced == [
        (file.id, "TRANSITION", "ia", DEFAULT, "STANDARD_IA"),
        (file.id, "TRANSITION", "offsite", SECOND_STORE, "STANDARD_IA"),
    ]


async def test_expiry_soft_deletes_then_purges_keeping_shared_blobs_and_held_files(
    stack: Stack,
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    clients: StackClients,
    jetstream: JetStreamContext,
    status_events: StatusEvents,
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    await set_rules(
        admin,
        tenant,
        metadata_service_pb2.LifecycleRule(
            id="tmp",
            name_prefix="tmp/",
            after_seconds=DAY,
            action=Kind.LIFECYCLE_ACTION_KIND_EXPIRE,
            purge_after_seconds=3600,
        ),
    )
    lone = await upload(client, status_events, os.urandom(2048), name="tmp/lone.pdf")
    shared_body = os.urandom(2048)
    shared = await upload(client, status_events, shared_body, name="tmp/shared.pdf")
    kept = await upload(client, status_events, shared_body, name="keep/copy.pdf")
    assert kept.deduplicated
    held = await upload(client, status_events, os.urandom(2048), name="tmp/held.pdf")
    await admin.SetLegalHold(
        metadata_service_pb2.SetLegalHoldRequest(file_id=held.id, tenant=tenant, legal_hold=True)
    )
    refused = await rpc_error(
        client.metadata.DeleteFile(metadata_service_pb2.DeleteFileRequest(file_id=held.id))
    )
    assert (refused.code.name, refused.reason) == ("FAILED_PRECONDITION", "LEGAL_HOLD")
    lone_key, shared_key, held_key = (f"originals/{tenant}/{f.id}" for f in (lone, shared, held))
    job = make_job(stack, admin, jetstream)
    expired_at = later(2)

    await job.run(now=expired_at, tenant=tenant)
    for file in (lone, shared):
        soft = await client.metadata.GetFile(
            metadata_service_pb2.GetFileRequest(file_id=file.id, include_deleted=True)
        )
        assert (soft.status, soft.status_reason) == (resources_pb2.FILE_STATUS_DELETED, "LIFECYCLE_EXPIRED")
    # Soft: the bytes stay for the grace.
    assert storage_class_of(stack, DEFAULT, lone_key) == "STANDARD"
    assert (await get_file(client, held.id)).status == resources_pb2.FILE_STATUS_READY  # held
    assert (await get_file(client, kept.id)).status == resources_pb2.FILE_STATUS_READY  # not selected

    # The reconciler (repairing) leaves the kept objects to their purge.
    report = await run_reconciler(reconciler_options(stack, tenant))
    assert report.findings == [], report.render_text()
    assert storage_class_of(stack, DEFAULT, lone_key) == "STANDARD"
    # Within the grace nothing is purged; after it, what no live record needs is.
    assert (await job.run(now=expired_at + timedelta(minutes=30), tenant=tenant)).actions == []
    await job.run(now=expired_at + timedelta(hours=2), tenant=tenant)
    assert storage_class_of(stack, DEFAULT, lone_key) is None
    # The deduplicated content is the kept file's too: its blob's object stays, and still reads.
    assert storage_class_of(stack, DEFAULT, shared_key) == "STANDARD"
    url = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=kept.id))
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(url.url)).content == shared_body
    assert await actions_of(client, lone.id) == [
        ("EXPIRE", "ANNOUNCED", "tmp"),
        ("PURGE", "ANNOUNCED", "tmp"),
    ]
    assert storage_class_of(stack, DEFAULT, held_key) == "STANDARD"
    assert await actions_of(client, held.id) == []

    # Once the hold is cleared, the rule expires the file at the next run.
    await admin.SetLegalHold(
        metadata_service_pb2.SetLegalHoldRequest(file_id=held.id, tenant=tenant, legal_hold=False)
    )
    await job.run(now=expired_at + timedelta(hours=3), tenant=tenant)
    assert await actions_of(client, held.id) == [("EXPIRE", "ANNOUNCED", "tmp")]


async def test_a_run_stopped_halfway_and_run_again_reaches_the_same_end_state(
    stack: Stack,
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    clients: StackClients,
    jetstream: JetStreamContext,
    status_events: StatusEvents,
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    await set_rules(
        admin,
        tenant,
        metadata_service_pb2.LifecycleRule(
            id="archive",
            after_seconds=DAY,
            action=Kind.LIFECYCLE_ACTION_KIND_TRANSITION,
            target_storage_class="GLACIER",
        ),
    )
    files = [await upload(client, status_events, os.urandom(1024), name=f"f{i}.pdf") for i in range(4)]
    job = make_job(stack, admin, jetstream, lease_s=60)
    now = later(2)
    steps = 0

    class Crash(Exception):
        pass

    async def crash_at_the_second(action: metadata_service_pb2.LifecycleAction) -> None:
        nonlocal steps
        steps += 1
        if steps == 2:
            # Its object is in GLACIER already; the catalogue has not recorded it.
            raise Crash

    with pytest.raises(Crash):
        await job.run(now=now, tenant=tenant, after_storage_step=crash_at_the_second)
    classes = [(await get_file(client, f.id)).storage_class for f in files]
    assert classes.count("GLACIER") == 1
    stored = [storage_class_of(stack, DEFAULT, f"originals/{tenant}/{f.id}") for f in files]
    assert stored.count("GLACIER") == 2

    # Another job at once: the stopped job's leases still hold, so it takes nothing of them.
    assert (await make_job(stack, admin, jetstream).run(now=now, tenant=tenant)).done == 0
    # Once they lapse, a run finishes the work.
    rerun = await job.run(now=now + timedelta(seconds=61), tenant=tenant)
    assert rerun.done == 3
    for file in files:
        final = await get_file(client, file.id)
        assert (final.storage_class, final.archived) == ("GLACIER", True)
        assert storage_class_of(stack, DEFAULT, f"originals/{tenant}/{file.id}") == "GLACIER"
        assert await actions_of(client, file.id) == [("TRANSITION", "ANNOUNCED", "archive")]
    # One event per action, the crashed one's included, none twice.
    announced = sorted(e.file_id for e in await lifecycle_events(jetstream, tenant))
    assert announced == sorted(f.id for f in files)
    # And a run after that finds nothing to do.
    assert (await job.run(now=now + timedelta(days=1), tenant=tenant)).actions == []


async def test_an_archived_file_is_refused_then_restored_and_announced(
    stack: Stack,
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    clients: StackClients,
    jetstream: JetStreamContext,
    status_events: StatusEvents,
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    await set_rules(
        admin,
        tenant,
        metadata_service_pb2.LifecycleRule(
            id="deep",
            after_seconds=DAY,
            action=Kind.LIFECYCLE_ACTION_KIND_TRANSITION,
            target_storage_class="DEEP_ARCHIVE",
        ),
    )
    body = os.urandom(3000)
    file = await upload(client, status_events, body)
    key = f"originals/{tenant}/{file.id}"
    job = make_job(stack, admin, jetstream)
    await job.run(now=later(2), tenant=tenant)
    archived = await get_file(client, file.id)
    assert (archived.storage_class, archived.archived) == ("DEEP_ARCHIVE", True)
    refused = await rpc_error(
        client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file.id))
    )
    assert (refused.code.name, refused.reason) == ("FAILED_PRECONDITION", "FILE_ARCHIVED")
    # Another user may not restore it (nor learn it exists).
    stranger = await rpc_error(
        clients("mallory", tenant).processor.RestoreFile(
            processor_service_pb2.RestoreFileRequest(file_id=file.id)
        )
    )
    assert stranger.reason == "FILE_NOT_FOUND"

    restored = await client.processor.RestoreFile(processor_service_pb2.RestoreFileRequest(file_id=file.id))
    assert (restored.storage_class, restored.archived) == ("STANDARD", False)
    assert storage_class_of(stack, DEFAULT, key) == "STANDARD"
    url = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file.id))
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(url.url)).content == body
    announced = [(e.action, e.storage_class, e.readable) for e in await lifecycle_events(jetstream, tenant)]
    assert announced == [("TRANSITION", "DEEP_ARCHIVE", False), ("RESTORE", "STANDARD", True)]
    # Restoring a readable file is answered as it is; the rule does not archive it again.
    again = await client.processor.RestoreFile(processor_service_pb2.RestoreFileRequest(file_id=file.id))
    assert again.storage_class == "STANDARD"
    assert (await job.run(now=later(30), tenant=tenant)).actions == []
    assert [kind for kind, _, _ in await actions_of(client, file.id)] == ["TRANSITION", "RESTORE"]


async def test_the_command_line_dry_run_lists_and_changes_nothing(
    stack: Stack,
    admin: metadata_service_pb2_grpc.MetadataServiceAsyncStub,
    clients: StackClients,
    status_events: StatusEvents,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenant = fresh_tenant()
    client = clients("alice", tenant)
    await set_rules(
        admin,
        tenant,
        metadata_service_pb2.LifecycleRule(
            id="old", after_seconds=7 * DAY, action=Kind.LIFECYCLE_ACTION_KIND_EXPIRE
        ),
    )
    file = await upload(client, status_events, os.urandom(512))
    e = stack.endpoints
    access_key, secret_key = e.credentials.service_s3_keys["processor"]
    environ = {
        "FILESTORE_AUTH_SECRET": e.auth_secret,
        "FILESTORE_METADATA_ADDR": e.metadata_addr,
        "FILESTORE_NATS_URL": e.nats_url,
        "FILESTORE_S3_ENDPOINT": e.s3_endpoint,
        "FILESTORE_S3_BUCKET": e.bucket,
        "FILESTORE_S3_REGION": e.s3_region,
        "FILESTORE_S3_ACCESS_KEY": access_key,
        "FILESTORE_S3_SECRET_KEY": secret_key,
    }
    argv = ["run", "--dry-run", "--tenant", tenant, "--now", later(8).isoformat()]
    assert await asyncio.to_thread(lifecycle_main, argv, environ=environ) == 0
    out = capsys.readouterr().out
    assert f"would do: EXPIRE {file.id} (rule old)" in out
    assert (await get_file(client, file.id)).status == resources_pb2.FILE_STATUS_READY
    assert await actions_of(client, file.id) == []
