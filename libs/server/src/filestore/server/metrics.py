"""Prometheus metrics: every metric any Filestore process exposes is defined here, once.

Each service serves them over HTTP at ``/metrics`` on ``FILESTORE_METRICS_PORT`` (off when 0), next to
its gRPC port. Metrics live in the default registry, so the client library's process and GC metrics
come along. Labels take only values from small fixed sets (method names of the served protos, status
codes, pipeline steps, subjects), never ids or user input: a label value is a time series for ever.

The RPC metrics are recorded on every call, so their cost matters: :func:`observe_rpc` keeps the
labelled children in a dict, which makes a call two dict lookups, one counter increment and one
histogram observation (a few microseconds).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "CONSUMER_ACK_PENDING",
    "CONSUMER_PENDING",
    "EVENTS_CONSUMED",
    "EVENTS_PUBLISHED",
    "PIPELINE_STEP_DURATION",
    "PRESIGNED_URLS",
    "REAPER_PASSES",
    "REAPER_UPLOADS",
    "RECONCILER_FINDINGS",
    "RECONCILER_REPAIRS",
    "RPC_DURATION",
    "RPC_HANDLED",
    "MetricsServer",
    "observe_rpc",
    "start_metrics_server",
]

#: Control-plane RPCs take milliseconds; the top buckets catch a stuck database or storage.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Pipeline steps stream whole objects: from milliseconds (sniff) to many minutes (scanning GiBs).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

RPC_HANDLED = Counter(
    "filestore_rpc_server_handled",
    "RPCs served, by full method name and gRPC status code.",
    ["method", "code"],
)
RPC_DURATION = Histogram(
    "filestore_rpc_server_duration_seconds",
    "Time to serve an RPC, by full method name and gRPC status code.",
    ["method", "code"],
    buckets=RPC_BUCKETS,
)
PRESIGNED_URLS = Counter(
    "filestore_presigned_urls_issued",
    "Presigned URLs handed out: put, post_policy and part (upload), get and cdn (download).",
    ["kind"],
)
EVENTS_PUBLISHED = Counter(
    "filestore_events_published",
    "Events published to JetStream, by subject and result (published, duplicate, error).",
    ["subject", "result"],
)
EVENTS_CONSUMED = Counter(
    "filestore_events_consumed",
    "Events taken from JetStream, by subject and what became of them "
    "(acked, set_aside, retried, rejected, dead_lettered, requeued, malformed, error).",
    ["subject", "result"],
)
PIPELINE_STEP_DURATION = Histogram(
    "filestore_pipeline_step_duration_seconds",
    "Time taken by a pipeline step, by step and outcome (passed, failed, skipped, error).",
    ["step", "outcome"],
    buckets=STEP_BUCKETS,
)
CONSUMER_PENDING = Gauge(
    "filestore_consumer_pending_messages",
    "Messages of a durable consumer not yet delivered (its lag), sampled from JetStream.",
    ["consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "filestore_consumer_ack_pending_messages",
    "Messages of a durable consumer delivered but not yet acknowledged, sampled from JetStream.",
    ["consumer"],
)
REAPER_PASSES = Counter(
    "filestore_reaper_passes",
    "Passes of the upload reaper, by result (ok, failed).",
    ["result"],
)
REAPER_UPLOADS = Counter(
    "filestore_reaper_uploads",
    "Expired uploads the reaper handled, by result (reaped, failed).",
    ["result"],
)
RECONCILER_FINDINGS = Counter(
    "filestore_reconciler_findings",
    "Differences the reconciler found between the database and storage, by kind.",
    ["kind"],
)
RECONCILER_REPAIRS = Counter(
    "filestore_reconciler_repairs",
    "Differences the reconciler repaired, by kind.",
    ["kind"],
)

_rpc_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def observe_rpc(method: str, code: str, seconds: float) -> None:
    """Count one served RPC and observe its duration."""
    children = _rpc_children.get((method, code))
    if children is None:
        # Racing threads may both create the pair: labels() answers the same children to both.
        children = (RPC_HANDLED.labels(method, code), RPC_DURATION.labels(method, code))
        _rpc_children[(method, code)] = children
    children[0].inc()
    children[1].observe(seconds)


class MetricsServer:
    """The ``/metrics`` HTTP endpoint, served from a daemon thread so that a busy event loop never
    delays a scrape (and a scrape never blocks the loop)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(host: str, port: int) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` (port 0 picks a free one; see ``.port``)."""
    server, thread = start_http_server(port, addr=host.strip("[]"))
    return MetricsServer(server, thread)
