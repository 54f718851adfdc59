"""Filestore's server kit: the gRPC bootstrap and its interceptors, service settings, logging, metrics,
tracing, events (NATS), object storage (S3), URL signing and the channels to dependencies.

Importing it, any module of it, makes every call on a channel of :mod:`filestore.core.channels` that
this process opens carry the request id of the RPC being served and the current trace context: what a
service passes on to the services it calls, and what an SDK user's process never pays for.
"""

from __future__ import annotations

from filestore.core.channels import add_metadata_source
from filestore.server.logging import request_id_metadata
from filestore.server.tracing import trace_metadata

add_metadata_source(request_id_metadata)
add_metadata_source(trace_metadata)
