"""OpenTelemetry tracing: W3C trace context through gRPC metadata and NATS headers, so that one upload
is one trace from ``CreateUpload`` to the READY event.

Where context travels:

* the server interceptor (:mod:`filestore.server.bootstrap`) continues the caller's ``traceparent`` from
  the call's metadata in a SERVER span;
* every channel's interceptor (:mod:`filestore.core.channels`) puts the current context into every
  outgoing call's metadata (:func:`trace_metadata`);
* :func:`filestore.server.events.publish` puts it into the NATS headers (and the event's ``trace``
  field, which survives a dead-letter replay that copies only the payload);
* the processor's worker continues it in a CONSUMER span per event, with a span per pipeline step.

Tracing *off* (exporter ``none``, the default) installs no SDK: nothing is recorded and no span is
made, but an incoming ``traceparent`` is still made current and passed on unchanged. A Filestore
behind a traced caller therefore never breaks the caller's trace, at the cost of a metadata scan.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import IO, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from filestore.server.settings import ObservabilitySettings

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "JsonLinesSpanExporter",
    "SpanKind",
    "build_tracer_provider",
    "configure_tracing",
    "current_trace_id",
    "enabled",
    "extract",
    "extract_from_metadata",
    "inject",
    "mark_error",
    "set_tracer_provider",
    "span",
    "trace_metadata",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The only headers this propagator reads; a scan of gRPC metadata looks for these keys alone.
TRACE_HEADERS = frozenset({TRACEPARENT, TRACESTATE})
#: Spans leave in batches this often: soon enough to follow a test or a live upload, cheap enough.
EXPORT_DELAY_MS = 1000
OTLP_TIMEOUT_S = 2.0

_propagator = TraceContextTextMapPropagator()


class _State:
    #: None while tracing is off: then :func:`span` makes no span at all.
    tracer: trace.Tracer | None = None


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def set_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Record spans with ``provider`` (None: tracing off). Processes call :func:`configure_tracing`;
    tests call this with a provider of their own, leaving OpenTelemetry's global provider alone."""
    _state.tracer = None if provider is None else provider.get_tracer("filestore")


def configure_tracing(settings: ObservabilitySettings, *, service: str) -> Callable[[], None] | None:
    """Install the exporter the settings name; answers the function that flushes and stops it at
    shutdown, or None when tracing is off."""
    provider = build_tracer_provider(settings, service=service)
    if provider is None:
        set_tracer_provider(None)
        return None
    # Global as well, so that libraries with their own OpenTelemetry instrumentation join our traces.
    trace.set_tracer_provider(provider)
    set_tracer_provider(provider)

    def shutdown() -> None:
        set_tracer_provider(None)
        provider.shutdown()

    return shutdown


def build_tracer_provider(settings: ObservabilitySettings, *, service: str) -> TracerProvider | None:
    """A provider exporting where the settings say (None for ``none``), spans leaving in batches."""
    if settings.tracing_exporter == "none":
        return None
    exporter: SpanExporter
    if settings.tracing_exporter == "otlp":
        # Imported here: it loads the OTLP protos and a gRPC channel that nobody else needs.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=settings.tracing_otlp_endpoint,
            insecure=settings.tracing_otlp_endpoint.startswith("http://"),
            # Bounds the retries of one batch, and so how long an unreachable collector can hold up
            # a shutdown: the spans are dropped rather than the process kept past its stop budget.
            timeout=OTLP_TIMEOUT_S,
        )
    elif settings.tracing_exporter == "file":
        assert settings.tracing_file is not None, "checked by the settings"
        exporter = JsonLinesSpanExporter.to_file(settings.tracing_file)
    else:
        exporter = JsonLinesSpanExporter(sys.stderr)
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"filestore-{service}"}),
        # A caller's sampling decision wins, so a trace is recorded whole or not at all.
        sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS))
    return provider


# --------------------------------------------------------------------------------- propagation


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The trace context in ``carrier`` (gRPC metadata or NATS headers as a dict), None when it has
    no valid ``traceparent``."""
    if not carrier or TRACEPARENT not in carrier:
        return None
    extracted = _propagator.extract(carrier)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def extract_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context | None:
    """:func:`extract` over gRPC invocation metadata (a sequence of key/value pairs)."""
    found: dict[str, str] = {}
    for key, value in metadata or ():
        if key in TRACE_HEADERS:
            found[key] = value.decode() if isinstance(value, bytes) else value
    return extract(found)


def inject(carrier: MutableMapping[str, str]) -> None:
    """Put the current trace context into ``carrier``; nothing when there is none."""
    if trace.get_current_span().get_span_context().is_valid:
        _propagator.inject(carrier)


def trace_metadata(present: Collection[str]) -> list[tuple[str, str]]:
    """The current trace context for an outgoing call (a channel's metadata source, see
    :mod:`filestore.server`), unless the call carries a ``traceparent`` of its own already."""
    if TRACEPARENT in present:
        return []
    carrier: dict[str, str] = {}
    inject(carrier)
    return list(carrier.items())


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, for log lines; None outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    record_exceptions: bool = True,
) -> Iterator[trace.Span | None]:
    """A current span named ``name``, child of ``parent`` (else of the current span).

    With tracing off it makes none and yields None; it still makes ``parent`` current, so that the
    context it came with is passed on. An exception is re-raised, and unless ``record_exceptions`` is
    false, recorded on the span, whose status it sets to ERROR.
    """
    tracer = _state.tracer
    if tracer is None:
        if parent is None:
            yield None
            return
        token = otel_context.attach(parent)
        try:
            yield None
        finally:
            otel_context.detach(token)
        return
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        record_exception=record_exceptions,
        set_status_on_exception=record_exceptions,
    ) as current:
        yield current


def mark_error(current: trace.Span | None, description: str) -> None:
    """Set an error status on ``current`` (a no-op with tracing off)."""
    if current is not None:
        current.set_status(Status(StatusCode.ERROR, description))


# ------------------------------------------------------------------------------------ exporter


class JsonLinesSpanExporter(SpanExporter):
    """One JSON object per finished span and line: trace and span ids, parent, name, kind, service,
    start and end (Unix ns), status and attributes. For the console, and for a file that tests (or
    ``jq``) read, where a collector would be overkill."""

    def __init__(self, stream: IO[str], *, close: bool = False) -> None:
        self._stream = stream
        self._close = close
        self._lock = threading.Lock()

    @classmethod
    def to_file(cls, path: str) -> JsonLinesSpanExporter:
        # Line-buffered append: every span is on disk as soon as its batch is written, and several
        # processes may share one file without tearing each other's lines.
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return cls(open(path, "a", buffering=1, encoding="utf-8"), close=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(
            json.dumps(_span_record(finished), separators=(",", ":")) + "\n" for finished in spans
        )
        try:
            with self._lock:
                self._stream.write(lines)
                self._stream.flush()
        except (OSError, ValueError):
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._close:
            with self._lock:
                self._stream.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _span_record(finished: ReadableSpan) -> dict[str, Any]:
    span_context = finished.get_span_context()
    assert span_context is not None, "a finished span has a context"
    parent = finished.parent
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": finished.name,
        "kind": finished.kind.name,
        "service": finished.resource.attributes.get("service.name"),
        "start_ns": finished.start_time,
        "end_ns": finished.end_time,
        "status": finished.status.status_code.name,
        "attributes": dict(finished.attributes or {}),
    }
