"""Metrics and trace propagation of the shared bootstrap, on a real gRPC server bound to a free port:
the server interceptor counts RPCs by method and status, serves each in a span continuing the caller's
``traceparent``, the client interceptor passes the context on, and NATS headers (or an event's own
``trace`` field) carry it across JetStream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from filestore.core.auth import TokenVerifier, mint_token
from filestore.core.channels import insecure_channel
from filestore.core.env import Env, SettingsError
from filestore.core.errors import FailedPrecondition
from filestore.server import events, metrics, tracing
from filestore.server.bootstrap import ServerHandle, create_server
from filestore.server.settings import ObservabilitySettings
from filestore.v1 import events_pb2

SECRET = "o" * 40
SERVICE = "test.Traced"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


def _token() -> str:
    return mint_token(SECRET, subject="ann", tenant="acme")


class _Relay:
    """``Echo`` answers the traceparent it was called with; ``Relay`` calls Echo on the same server
    through a Filestore client channel, as a service calls metadata; ``Fail`` is a domain error."""

    def __init__(self) -> None:
        self.port = 0

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        seen = dict(context.invocation_metadata() or ())
        value = seen.get(tracing.TRACEPARENT, "")
        return value.encode() if isinstance(value, str) else value

    async def relay(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        async with insecure_channel(f"127.0.0.1:{self.port}", token=_token) as channel:
            answer: bytes = await channel.unary_unary(f"/{SERVICE}/Echo")(b"")
            return answer

    async def fail(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        raise FailedPrecondition("not now", reason="NOT_NOW")

    def register(self, server: grpc.aio.Server) -> list[str]:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(behavior)
            for name, behavior in (("Echo", self.echo), ("Relay", self.relay), ("Fail", self.fail))
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        return [SERVICE]


@pytest.fixture
async def handle() -> AsyncIterator[ServerHandle]:
    relay = _Relay()
    handle = create_server(
        listen="127.0.0.1:0",
        domain="test.filestore.v1",
        verifier=TokenVerifier(SECRET),
        register=relay.register,
    )
    relay.port = handle.port
    await handle.start()
    yield handle
    await handle.stop(0)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for one test (OpenTelemetry's global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_provider(provider)
    yield exporter
    tracing.set_tracer_provider(None)
    provider.shutdown()


async def _call(port: int, method: str, *, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    async with insecure_channel(f"127.0.0.1:{port}", token=_token) as channel:
        answer: bytes = await channel.unary_unary(f"/{SERVICE}/{method}")(b"", metadata=metadata)
        return answer


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _sample_reaching(name: str, labels: dict[str, str], expected: float) -> float:
    """The sample once it reaches ``expected`` (or as it is after a second). An aborted call's status
    leaves the server (grpc.aio's ``abort`` sends it) before the interceptors' ``finally`` counts it,
    so the caller can hold the error a moment before the counter moves."""
    for _ in range(100):
        if (value := _sample(name, labels)) >= expected:
            return value
        await asyncio.sleep(0.01)
    return _sample(name, labels)


# ------------------------------------------------------------------------------------- metrics


async def test_every_rpc_is_counted_by_method_and_status_with_its_duration(handle: ServerHandle) -> None:
    ok = {"method": f"/{SERVICE}/Echo", "code": "OK"}
    failed = {"method": f"/{SERVICE}/Fail", "code": "FAILED_PRECONDITION"}
    before = {
        "ok": _sample("filestore_rpc_server_handled_total", ok),
        "ok_observed": _sample("filestore_rpc_server_duration_seconds_count", ok),
        "failed": _sample("filestore_rpc_server_handled_total", failed),
    }
    await _call(handle.port, "Echo")
    await _call(handle.port, "Echo")
    with pytest.raises(grpc.RpcError):
        await _call(handle.port, "Fail")
    assert _sample("filestore_rpc_server_handled_total", ok) == before["ok"] + 2
    assert _sample("filestore_rpc_server_duration_seconds_count", ok) == before["ok_observed"] + 2
    failed_count = await _sample_reaching("filestore_rpc_server_handled_total", failed, before["failed"] + 1)
    assert failed_count == before["failed"] + 1
    # The histogram's largest finite bucket holds both calls: they took well under 10 s.
    assert _sample("filestore_rpc_server_duration_seconds_bucket", {**ok, "le": "10.0"}) >= 2


async def test_metrics_are_served_over_http(handle: ServerHandle) -> None:
    await _call(handle.port, "Echo")
    server = metrics.start_metrics_server("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
    assert response.status_code == 200
    assert f'filestore_rpc_server_handled_total{{code="OK",method="/{SERVICE}/Echo"}}' in response.text
    assert "filestore_pipeline_step_duration_seconds" in response.text  # defined (empty) everywhere


# ------------------------------------------------------------------------------------- tracing


async def test_the_server_span_continues_the_callers_trace_and_calls_onward_join_it(
    handle: ServerHandle, spans: InMemorySpanExporter
) -> None:
    relayed = await _call(handle.port, "Relay", metadata=((tracing.TRACEPARENT, TRACEPARENT),))
    finished = {span.name: span for span in spans.get_finished_spans()}
    outer, inner = finished[f"{SERVICE}/Relay"], finished[f"{SERVICE}/Echo"]
    assert outer.kind is trace.SpanKind.SERVER
    assert format(outer.context.trace_id, "032x") == TRACE_ID
    assert outer.parent is not None
    assert format(outer.parent.span_id, "016x") == PARENT_SPAN_ID
    # The relay's outgoing call carried the relay's own span as the parent of the next hop.
    assert inner.context.trace_id == outer.context.trace_id
    assert inner.parent is not None
    assert inner.parent.span_id == outer.context.span_id
    assert relayed.decode().split("-")[:3] == ["00", TRACE_ID, format(outer.context.span_id, "016x")]


async def test_a_call_without_traceparent_starts_a_trace(
    handle: ServerHandle, spans: InMemorySpanExporter
) -> None:
    await _call(handle.port, "Echo")
    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert span.context.is_valid


async def test_a_domain_error_is_a_status_attribute_not_a_server_fault(
    handle: ServerHandle, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.RpcError):
        await _call(handle.port, "Fail")
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert span.status.status_code is trace.StatusCode.UNSET
    assert not span.events  # the abort is not recorded as an exception


async def test_with_tracing_off_an_incoming_traceparent_passes_through_unchanged(
    handle: ServerHandle,
) -> None:
    assert not tracing.enabled()
    relayed = await _call(handle.port, "Relay", metadata=((tracing.TRACEPARENT, TRACEPARENT),))
    assert relayed.decode() == TRACEPARENT


async def test_with_tracing_off_and_no_caller_context_nothing_is_sent(handle: ServerHandle) -> None:
    assert await _call(handle.port, "Relay") == b""


async def test_a_traceparent_round_trips_through_nats_headers(spans: InMemorySpanExporter) -> None:
    with tracing.span("publisher") as publisher:
        assert publisher is not None
        headers = {"Nats-Msg-Id": "x"}
        tracing.inject(headers)
    received = events.trace_context_of(headers, events_pb2.ObjectCreated())
    assert received is not None
    with tracing.span("consumer", kind=tracing.SpanKind.CONSUMER, parent=received) as consumer:
        assert consumer is not None
    consumer_span = spans.get_finished_spans()[-1]
    assert consumer_span.context.trace_id == publisher.get_span_context().trace_id
    assert consumer_span.parent is not None
    assert consumer_span.parent.span_id == publisher.get_span_context().span_id


def test_an_event_without_headers_falls_back_to_its_trace_field() -> None:
    event = events_pb2.ObjectCreated(trace=events_pb2.TraceContext(traceparent=TRACEPARENT))
    received = events.trace_context_of(None, event)
    assert received is not None
    span_context = trace.get_current_span(received).get_span_context()
    assert format(span_context.trace_id, "032x") == TRACE_ID
    assert format(span_context.span_id, "016x") == PARENT_SPAN_ID


def test_malformed_or_missing_context_is_no_context() -> None:
    assert events.trace_context_of({"traceparent": "00-zz-yy-01"}, events_pb2.ObjectCreated()) is None
    assert events.trace_context_of({}, events_pb2.ObjectCreated()) is None
    assert tracing.extract(None) is None


class _JetStream:
    """Records what would be published; answers like JetStream (first copy new, then duplicates)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str],
        timeout: float | None = None,  # noqa: ASYNC109 (JetStreamContext.publish's own signature)
    ) -> Any:
        duplicate = any(h["Nats-Msg-Id"] == headers["Nats-Msg-Id"] for _, _, h in self.published)
        self.published.append((subject, payload, headers))
        return type("Ack", (), {"duplicate": duplicate})()


async def test_publish_carries_the_context_in_headers_and_payload_and_counts(
    spans: InMemorySpanExporter,
) -> None:
    js = _JetStream()
    event = events_pb2.FileStatusChanged(file_id="f1")
    labels = {"subject": "files.file.ready", "result": "published"}
    duplicates = {**labels, "result": "duplicate"}
    before = (
        _sample("filestore_events_published_total", labels),
        _sample("filestore_events_published_total", duplicates),
    )
    with tracing.span("caller"):
        await events.publish(js, "files.file.ready", event, msg_id="m1")  # type: ignore[arg-type]
        await events.publish(js, "files.file.ready", event, msg_id="m1")  # type: ignore[arg-type]
    _, payload, headers = js.published[0]
    producer = next(span for span in spans.get_finished_spans() if span.name == "files.file.ready publish")
    # version-trace_id-span_id-flags: the producer span is the parent of whoever consumes it.
    expected = ["00", format(producer.context.trace_id, "032x"), format(producer.context.span_id, "016x")]
    assert headers[tracing.TRACEPARENT].split("-")[:3] == expected
    assert events_pb2.FileStatusChanged.FromString(payload).trace.traceparent == headers[tracing.TRACEPARENT]
    assert not event.HasField("trace")  # the caller's message is left as it was
    assert _sample("filestore_events_published_total", labels) == before[0] + 1
    assert _sample("filestore_events_published_total", duplicates) == before[1] + 1


async def test_publish_without_context_sends_no_trace_headers() -> None:
    js = _JetStream()
    await events.publish(js, "files.file.ready", events_pb2.FileStatusChanged(), msg_id="m")  # type: ignore[arg-type]
    _, payload, headers = js.published[0]
    assert tracing.TRACEPARENT not in headers
    assert not events_pb2.FileStatusChanged.FromString(payload).HasField("trace")


def test_the_file_exporter_writes_one_json_line_per_span(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = tracing.JsonLinesSpanExporter.to_file(str(path))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_provider(provider)
    try:
        parent = tracing.extract({tracing.TRACEPARENT: TRACEPARENT})
        with tracing.span("step integrity", parent=parent, attributes={"filestore.step": "integrity"}):
            pass
    finally:
        tracing.set_tracer_provider(None)
        provider.shutdown()
    (line,) = path.read_text().splitlines()
    record = json.loads(line)
    assert record["trace_id"] == TRACE_ID
    assert record["parent_span_id"] == PARENT_SPAN_ID
    assert record["name"] == "step integrity"
    assert record["attributes"] == {"filestore.step": "integrity"}


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OpenTelemetry collector's receiving end: keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_the_otlp_exporter_sends_spans_to_a_collector() -> None:
    collector = _Collector()
    # A synchronous server: the exporter's thread blocks on it while the test waits for the flush.
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    settings = ObservabilitySettings(
        tracing_exporter="otlp", tracing_otlp_endpoint=f"http://127.0.0.1:{port}"
    )
    provider = tracing.build_tracer_provider(settings, service="upload")
    assert provider is not None
    tracing.set_tracer_provider(provider)
    try:
        with tracing.span("step scan", parent=tracing.extract({tracing.TRACEPARENT: TRACEPARENT})):
            pass
        assert provider.force_flush(timeout_millis=10_000)
    finally:
        tracing.set_tracer_provider(None)
        provider.shutdown()
        server.stop(0)
    (request,) = collector.requests
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    assert service == "filestore-upload"
    (exported,) = resource_spans.scope_spans[0].spans
    assert (exported.name, exported.trace_id.hex(), exported.parent_span_id.hex()) == (
        "step scan",
        TRACE_ID,
        PARENT_SPAN_ID,
    )


# ------------------------------------------------------------------------------------ settings


def test_observability_is_off_by_default() -> None:
    settings = ObservabilitySettings.from_env(Env({}))
    assert (settings.metrics_port, settings.tracing_exporter) == (0, "none")
    assert tracing.configure_tracing(settings, service="test") is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FILESTORE_TRACING_EXPORTER": "jaeger"}, "FILESTORE_TRACING_EXPORTER='jaeger' is not one of"),
        (
            {"FILESTORE_TRACING_EXPORTER": "file"},
            "FILESTORE_TRACING_EXPORTER=file needs FILESTORE_TRACING_FILE",
        ),
        (
            {"FILESTORE_TRACING_SAMPLE_RATIO": "2"},
            "FILESTORE_TRACING_SAMPLE_RATIO=2.0 must be between 0 and 1",
        ),
        ({"FILESTORE_METRICS_PORT": "70000"}, "FILESTORE_METRICS_PORT='70000' is not a valid integer"),
    ],
)
def test_malformed_observability_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        ObservabilitySettings.from_env(Env(environ))
