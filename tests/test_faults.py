"""Fault injection: uploads keep their promises while every component is SIGKILLed and restarted.

A stack of its own (the chaos kills its processes), SQLite inside `make test`, both databases and
1,000 uploads in `make test-faults` (sizes and databases from the environment: tests/faults.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import nats
import pytest

from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import events_pb2, resources_pb2
from tests.faults import (
    CHAOS_ORDER,
    PIPELINE_ENV,
    SESSIONS_ENV,
    THUMBNAIL_KIND,
    UPLOADS_ENV,
    SecondWorker,
    World,
    env_int,
    fault_databases,
    hold_multipart_sessions,
    make_body,
    uploads_under_chaos,
)
from tests.stacks import scratch_postgres_database

pytestmark = pytest.mark.local_stack

Status = resources_pb2.FileStatus

UPLOADS = env_int(UPLOADS_ENV, 200)
SESSIONS = env_int(SESSIONS_ENV, 200)
#: Room for the pipeline to drain after the last upload: a redelivery waits out ack_wait (5 s) and
#: the worker's growing nak delays.
DRAIN_S = 120.0 + UPLOADS * 0.2


@pytest.fixture(scope="module", params=fault_databases())
async def fault_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with AsyncExitStack() as resources:
        database_url = None
        if request.param == "postgresql":
            database_url = await resources.enter_async_context(scratch_postgres_database())
        config = StackConfig(
            home=tmp_path_factory.mktemp(f"faults-{request.param}"),
            ports=StackPorts.free(),
            database_url=database_url,
            ready_timeout_s=60.0,
            extra_env={"processor": PIPELINE_ENV},
        )
        yield await resources.enter_async_context(Stack(config))


@pytest.fixture
async def world(fault_stack: Stack) -> AsyncIterator[World]:
    opened = World(fault_stack, tenant=f"faults-{uuid.uuid4().hex[:10]}")
    yield opened
    await opened.close()


@pytest.mark.timeout(300 + UPLOADS * 0.6)
async def test_uploads_survive_every_component_being_killed(
    fault_stack: Stack, world: World, tmp_path: Path
) -> None:
    worker = SecondWorker(fault_stack, tmp_path)
    await worker.start()
    try:
        run = await uploads_under_chaos(world, worker, uploads=UPLOADS)
        acknowledged = set(run.acknowledged)
        await world.wait_all_ready(acknowledged, within_s=DRAIN_S)
        ready = await world.ready_events(acknowledged, within_s=DRAIN_S)
    finally:
        await worker.process.stop(10)
    stats = world.stats
    print(
        f"\nfaults: {UPLOADS} uploads, {len(acknowledged)} acknowledged, {run.failed} failed, "
        f"{run.downloads} downloaded during the chaos, {run.elapsed_s:.1f}s under chaos"
    )
    print(
        "faults: kills "
        + ", ".join(f"{k.component}@{k.at_upload} (up in {k.restart_s:.1f}s)" for k in run.kills)
    )
    print(
        f"faults: {stats.attempts} attempts, retried by status {dict(sorted(stats.retried.items()))}, "
        f"{stats.already_stored} retried PUTs found their object already stored (412)"
    )
    print(f"faults: retried by call {dict(sorted(stats.retried_by_call.items()))}")

    assert [kill.component for kill in run.kills] == list(CHAOS_ORDER)
    # Every failed attempt had a retryable status, and every upload got through on retries.
    assert stats.final == []
    assert run.failed == 0
    assert len(acknowledged) == UPLOADS
    assert sum(stats.retried.values()) > 0, "the kills cost no client a single retry: they missed"
    # READY exactly once: one READY event per file, and no event for a file we did not complete.
    assert set(ready) == acknowledged
    assert {file_id: n for file_id, n in ready.items() if n != 1} == {}
    # One derivative per kind: a thumbnail for every image, nothing for text; storage agrees.
    kinds = {file_id: await world.derivative_kinds(file_id) for file_id in acknowledged}
    expected = {f: [THUMBNAIL_KIND] if body.is_image else [] for f, body in run.acknowledged.items()}
    assert kinds == expected
    stored = await _stored_derivatives(world)
    assert stored == Counter(
        {f"derivatives/{world.tenant}/{f}/{THUMBNAIL_KIND}": 1 for f, k in expected.items() if k}
    )
    # A create killed between storage's create and BeginUpload (or that never heard BeginUpload's
    # answer) leaves a storage upload nothing knows of; the broker's reaper sweeps those once they
    # are old enough (here: now).
    swept = await world.sweep_unattached_storage_uploads()
    print(f"faults: {len(swept)} storage uploads left by dead creates swept")
    report = await world.fsck()
    assert report.findings == [], report.render_text()
    assert stats.final == []


async def _stored_derivatives(world: World) -> Counter[str]:
    return Counter(await asyncio.to_thread(world.stored_keys, f"derivatives/{world.tenant}/"))


@pytest.mark.timeout(300 + SESSIONS * 0.3)
async def test_concurrent_multipart_sessions_are_held_open_and_completed(world: World) -> None:
    run = await hold_multipart_sessions(world, sessions=SESSIONS)
    print(
        f"\nmultipart: {SESSIONS} sessions held open at once ({run.held_in_storage} in storage, "
        f"{run.two_part} with two parts), all completed in {run.elapsed_s:.1f}s"
    )
    assert run.held_in_storage == SESSIONS
    assert len(set(run.file_ids)) == SESSIONS
    await world.wait_all_ready(run.file_ids, within_s=DRAIN_S)
    assert await asyncio.to_thread(world.open_multipart_uploads, f"originals/{world.tenant}/") == 0
    assert world.stats.final == []
    report = await world.fsck()
    assert report.findings == [], report.render_text()


async def test_a_worker_killed_between_ready_and_its_event_is_announced_by_the_redelivery(
    fault_stack: Stack, world: World
) -> None:
    """The state a worker leaves when it dies after committing READY and before publishing it: the
    file READY, its event delivered once and never acked. The test plays that worker (the window is
    a few milliseconds wide, too narrow to hit with a kill on purpose); the redelivery must announce."""
    await fault_stack.kill("processor")
    try:
        body = make_body(1)
        file_id = await world.upload_file(body)
        connection = await nats.connect(fault_stack.endpoints.nats_url)
        try:
            pipeline = await connection.jetstream().pull_subscribe_bind("processor-pipeline", stream="FILES")
            [taken] = await pipeline.fetch(1, timeout=10)
            event = events_pb2.ObjectCreated.FromString(taken.data)
            assert event.file_id == file_id
        finally:
            await connection.close()  # without an ack: JetStream redelivers it after ack_wait
        file = await world.service_file(file_id)
        processing = await world.transition(file_id, Status.FILE_STATUS_PROCESSING, etag=file.etag)
        await world.transition(file_id, Status.FILE_STATUS_READY, etag=processing.etag)
    finally:
        await fault_stack.restart("processor")
    ready = await world.ready_events({file_id}, within_s=60)
    assert ready == Counter({file_id: 1})


async def test_a_storage_upload_left_by_a_dead_attempt_is_swept_not_adopted(world: World) -> None:
    """The broker creates the storage multipart upload at the key of a file id it chose, then records
    both with the upload in BeginUpload; an attempt that died in between (broker killed, metadata's
    answer lost) leaves one under a key no file has. The next attempt creates its own (finding the
    leftover would take a listing of storage, whose cost grows with every upload open in the bucket,
    on every create); the leftover holds no parts, since no URL was ever signed for it, and the
    reaper's sweep aborts it."""
    body = make_body(2)
    left_key = f"originals/{world.tenant}/{uuid.uuid4()}"
    left = await asyncio.to_thread(world.storage.create_multipart_upload, Bucket=world.bucket, Key=left_key)
    created = await world.create(body, kind=resources_pb2.UPLOAD_KIND_MULTIPART)
    key = f"originals/{world.tenant}/{created.file.id}"
    [part] = created.upload.part_urls
    assert f"uploadId={left['UploadId']}" not in part.request.url
    assert await asyncio.to_thread(world.open_multipart_uploads, f"originals/{world.tenant}/") == 2
    swept = await world.sweep_unattached_storage_uploads()
    assert left["UploadId"] in swept
    assert await asyncio.to_thread(world.open_multipart_uploads, left_key) == 0
    assert await asyncio.to_thread(world.open_multipart_uploads, key) == 1
    await world.put("PUT part", part.request, body.data)
    await world.complete(created.upload.id)
    await world.wait_all_ready([created.file.id], within_s=60)
    assert await asyncio.to_thread(world.open_multipart_uploads, key) == 0
    report = await world.fsck()
    assert report.findings == [], report.render_text()
