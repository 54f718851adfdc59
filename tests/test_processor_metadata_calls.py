"""How many calls one file costs the metadata service on its way to READY, counted where the calls
land: the metadata service's ``filestore_rpc_server_handled_total`` by method (issue 14: a
required-path file, integrity, sniff and scan, takes at most three metadata calls from claim to READY).

Its own stack, so nothing else moves the counters: the storage-event bridge is off (the broker's
CompleteUpload is the one announcement of the upload, so the processor never meets the file PENDING)
and so is the broker's reaper. The content is of a type with no optional steps, so nothing is queued
for enrichment after READY.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import resources_pb2
from tests.metrics import Samples, scrape
from tests.support import StackClients, collected_status_events, fresh_tenant, upload_file

METADATA = "/filestore.v1.MetadataService/"
#: What the upload broker asks of the metadata service for one upload; the rest is the processor's.
BROKER_METHODS = frozenset({"BeginUpload", "GetUploadRecord", "CompleteUploadRecord"})
#: The issue's budget for a required-path file, from claim to READY.
MAX_PROCESSOR_CALLS = 3
WAIT_S = 60.0


@pytest.fixture(scope="module")
async def quiet_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    home: Path = tmp_path_factory.mktemp("metadata-calls")
    config = StackConfig(
        home=home,
        ports=StackPorts.free(),
        ready_timeout_s=60.0,
        extra_env={
            "processor": {"FILESTORE_FILER_GRPC": ""},
            "upload": {"FILESTORE_REAPER_INTERVAL_S": "0"},
        },
    )
    async with Stack(config) as stack:
        yield stack


def calls_by_method(samples: Samples) -> dict[str, float]:
    counts: dict[str, float] = {}
    for (name, labels), count in samples.items():
        if name != "filestore_rpc_server_handled_total":
            continue
        method = dict(labels)["method"]
        if method.startswith(METADATA):
            short = method.removeprefix(METADATA)
            counts[short] = counts.get(short, 0.0) + count
    return counts


async def events_acked(stack: Stack) -> float:
    samples = await scrape(stack.endpoints.metrics_urls["processor"])
    return sum(
        count
        for (name, labels), count in samples.items()
        if name == "filestore_events_consumed_total" and dict(labels).get("result") == "acked"
    )


@pytest.mark.local_stack
async def test_a_required_path_file_takes_at_most_three_metadata_calls(quiet_stack: Stack) -> None:
    clients = StackClients(quiet_stack)
    try:
        client = clients("alice", fresh_tenant())
        metrics_url = quiet_stack.endpoints.metrics_urls["metadata"]
        acked_before = await events_acked(quiet_stack)
        before = calls_by_method(await scrape(metrics_url))
        async with collected_status_events(quiet_stack) as status_events:
            # Bytes libmagic calls application/octet-stream: the */* steps, all of them required.
            file = await upload_file(
                client, os.urandom(64 * 1024), name="blob.bin", content_type="application/octet-stream"
            )
            event = await status_events.wait_for(file.id)
        assert event.status == resources_pb2.FILE_STATUS_READY

        async def acked() -> None:
            # READY is announced before the event is acked: wait for the delivery to end.
            while True:
                if await events_acked(quiet_stack) > acked_before:
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(acked(), WAIT_S)
        after = calls_by_method(await scrape(metrics_url))
    finally:
        await clients.close()

    moved = {method: after[method] - before.get(method, 0.0) for method in after}
    processor_calls = {
        method: int(count)
        for method, count in sorted(moved.items())
        if count and method not in BROKER_METHODS
    }
    # Printed for the record (pytest -s): the calls by method, as the note reports them.
    print("processor -> metadata calls for one required-path file:", processor_calls)
    assert sum(processor_calls.values()) <= MAX_PROCESSOR_CALLS, processor_calls
