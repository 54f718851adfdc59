"""Metrics and traces of the real stack: after one upload reaches READY, every service's ``/metrics``
(scraped over HTTP) shows what happened, and the spans the services wrote (the test stack exports them
to ``traces/<service>.jsonl``) form one trace from CreateUpload to the READY event."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Mapping

import pytest

from filestore.stack import SERVICES, Stack
from filestore.v1 import download_service_pb2, resources_pb2, upload_service_pb2
from tests.metrics import Samples, scrape, value
from tests.support import ClientFactory, StatusEvents, put_presigned

UPLOAD = "/filestore.v1.UploadService"
METADATA = "/filestore.v1.MetadataService"
OBJECT_CREATED = "files.object.created"
FILE_READY = "files.file.ready"
FILE_ENRICH = "files.file.enrich"
WAIT_S = 30.0


async def scrape_all(stack: Stack) -> dict[str, Samples]:
    urls = stack.endpoints.metrics_urls
    assert set(urls) == set(SERVICES)
    return dict(zip(SERVICES, await asyncio.gather(*(scrape(urls[s]) for s in SERVICES)), strict=True))


class Delta:
    """What moved between two scrapes of one service."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self._before, self._after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self._after, name, **labels) - value(self._before, name, **labels)


def pdf_body() -> bytes:
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + os.urandom(64 * 1024)


# Both tests need what only a stack this session started provides: its services' metrics ports, and
# the span files its services write (see traced_services in tests/stacks.py).
@pytest.mark.local_stack
async def test_every_service_exposes_metrics_that_move_with_an_upload(
    stack: Stack, client_for: ClientFactory, status_events: StatusEvents
) -> None:
    client = client_for()
    before = await scrape_all(stack)
    body = pdf_body()
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(name="m.pdf", size=len(body), content_type="application/pdf")
    )
    assert (await put_presigned(created.upload.request, body)).status_code == 200
    await client.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id))
    assert (await status_events.wait_for(created.file.id)).status == resources_pb2.FILE_STATUS_READY
    await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=created.file.id))
    after = await scrape_all(stack)
    metadata, upload, processor, download = (Delta(before[s], after[s]) for s in SERVICES)

    # RPCs by method and status, with a latency histogram (one observation per call).
    for method in ("CreateUpload", "CompleteUpload"):
        labels = {"method": f"{UPLOAD}/{method}", "code": "OK"}
        assert upload("filestore_rpc_server_handled_total", **labels) == 1, method
        assert upload("filestore_rpc_server_duration_seconds_count", **labels) == 1, method
        assert upload("filestore_rpc_server_duration_seconds_bucket", le="+Inf", **labels) == 1, method
    assert metadata("filestore_rpc_server_handled_total", method=f"{METADATA}/BeginUpload", code="OK") == 1
    # The processor's road: the claim, then the steps' outcomes (see test_processor_metadata_calls).
    assert (
        metadata("filestore_rpc_server_handled_total", method=f"{METADATA}/StartProcessing", code="OK") >= 1
    )
    assert (
        metadata(
            "filestore_rpc_server_handled_total", method=f"{METADATA}/RecordProcessingOutcome", code="OK"
        )
        >= 2
    )
    assert (
        download(
            "filestore_rpc_server_handled_total",
            method="/filestore.v1.DownloadService/GetDownloadUrl",
            code="OK",
        )
        == 1
    )

    # Presigned URLs issued: the PUT by the broker, the GET by the download signer.
    assert upload("filestore_presigned_urls_issued_total", kind="put") == 1
    assert download("filestore_presigned_urls_issued_total", kind="get") == 1

    # Events: the broker announces the object (new, or a duplicate of the bridge's announcement plus
    # its re-announcement); the processor consumes it and publishes READY.
    announced = upload("filestore_events_published_total", subject=OBJECT_CREATED, result="published")
    assert announced >= 1
    assert processor("filestore_events_consumed_total", subject=OBJECT_CREATED, result="acked") >= 1
    assert processor("filestore_events_published_total", subject=FILE_READY, result="published") >= 1

    # Pipeline steps: the required ones passed, observed with their durations. (At least once: a file
    # an earlier test left behind may be processed meanwhile; so for the processor's counts above.)
    for step in ("integrity", "sniff", "scan"):
        observed = {"step": step, "outcome": "passed"}
        assert processor("filestore_pipeline_step_duration_seconds_count", **observed) >= 1, step
        assert processor("filestore_pipeline_step_duration_seconds_sum", **observed) > 0, step

    # Sampled state: the consumer's lag is reported, and the reaper has made its first pass.
    processor_now = after["processor"]
    assert (
        "filestore_consumer_pending_messages",
        frozenset({("consumer", "processor-pipeline")}),
    ) in processor_now
    assert value(after["upload"], "filestore_reaper_passes_total", result="ok") >= 1
    # The client library's process metrics come along.
    assert value(after["metadata"], "process_resident_memory_bytes") > 0


def read_spans(stack: Stack, trace_id: str) -> list[dict[str, object]]:
    spans = []
    for service in SERVICES:
        path = stack.paths.home / "traces" / f"{service}.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                if record["trace_id"] == trace_id:
                    spans.append(record)
    return spans


async def wait_for_spans(
    stack: Stack, trace_id: str, expected: set[tuple[str, str]]
) -> list[dict[str, object]]:
    """The spans of the trace, once every (service, span name) in ``expected`` is among them (the
    services export in batches, about once a second)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        spans = read_spans(stack, trace_id)
        missing = expected - {(str(span["service"]), str(span["name"])) for span in spans}
        if not missing:
            return spans
        assert time.monotonic() < deadline, f"spans never written: {sorted(missing)}"
        await asyncio.sleep(0.2)


async def wait_for_set_aside(stack: Stack, before: float) -> None:
    """Until the processor has set aside the storage bridge's announcement of the object (its file is
    still PENDING). Completing only then makes the broker's announcement, which carries the trace, the
    one that runs the pipeline (see the README's Observability section for the other order)."""
    deadline = time.monotonic() + WAIT_S
    url = stack.endpoints.metrics_urls["processor"]
    while (
        value(
            await scrape(url), "filestore_events_consumed_total", subject=OBJECT_CREATED, result="set_aside"
        )
        <= before
    ):
        assert time.monotonic() < deadline, "the bridge's announcement was never set aside"
        await asyncio.sleep(0.1)


@pytest.mark.local_stack
async def test_one_upload_is_one_trace_from_create_upload_to_ready(
    stack: Stack, client_for: ClientFactory, status_events: StatusEvents
) -> None:
    client = client_for()
    # The caller's own span: what an instrumented application (or the SDK) sends on every call.
    trace_id, caller_span_id = secrets.token_hex(16), secrets.token_hex(8)
    traced = (("traceparent", f"00-{trace_id}-{caller_span_id}-01"),)
    set_aside_before = value(
        await scrape(stack.endpoints.metrics_urls["processor"]),
        "filestore_events_consumed_total",
        subject=OBJECT_CREATED,
        result="set_aside",
    )
    body = pdf_body()
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(name="t.pdf", size=len(body), content_type="application/pdf"),
        metadata=traced,
    )
    assert (await put_presigned(created.upload.request, body)).status_code == 200
    await wait_for_set_aside(stack, set_aside_before)
    await client.upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id), metadata=traced
    )
    ready = await status_events.wait_for(created.file.id)
    assert ready.status == resources_pb2.FILE_STATUS_READY
    # The READY event itself carries the trace, for whoever consumes it next.
    assert ready.trace.traceparent.split("-")[1] == trace_id

    upload, metadata, processor = "filestore-upload", "filestore-metadata", "filestore-processor"
    spans = await wait_for_spans(
        stack,
        trace_id,
        {
            (upload, "filestore.v1.UploadService/CreateUpload"),
            (metadata, "filestore.v1.MetadataService/BeginUpload"),
            (upload, "filestore.v1.UploadService/CompleteUpload"),
            (metadata, "filestore.v1.MetadataService/CompleteUploadRecord"),
            (upload, f"{OBJECT_CREATED} publish"),
            (processor, f"{OBJECT_CREATED} process"),
            (processor, "step integrity"),
            (processor, "step sniff"),
            (processor, "step scan"),
            (metadata, "filestore.v1.MetadataService/StartProcessing"),
            (metadata, "filestore.v1.MetadataService/RecordProcessingOutcome"),
            (processor, f"{FILE_READY} publish"),
            # A PDF's thumbnail and OCR run after READY from the processor's own queue, in the same
            # trace. That consumer span ends last, after the steps and metadata calls under it, so
            # once it is written the whole tree is.
            (processor, f"{FILE_ENRICH} publish"),
            (processor, f"{FILE_ENRICH} process"),
        },
    )
    # One tree: every span hangs from the caller's span or from another span of the same trace.
    span_ids = {span["span_id"] for span in spans}
    orphans = [span["name"] for span in spans if span["parent_span_id"] not in span_ids | {caller_span_id}]
    assert not orphans, orphans
    roots = {span["name"] for span in spans if span["parent_span_id"] == caller_span_id}
    assert roots == {"filestore.v1.UploadService/CreateUpload", "filestore.v1.UploadService/CompleteUpload"}
    # The pipeline ran under the broker's announcement: consumer span -> the broker's publish span.
    by_id: Mapping[object, dict[str, object]] = {span["span_id"]: span for span in spans}
    consumer = next(span for span in spans if span["name"] == f"{OBJECT_CREATED} process")
    assert by_id[consumer["parent_span_id"]]["name"] == f"{OBJECT_CREATED} publish"
    step = next(span for span in spans if span["name"] == "step integrity")
    assert step["parent_span_id"] == consumer["span_id"]
