"""Which RPCs the browser face serves, and how each is forwarded to the gRPC service that owns it.

Only the RPCs in :data:`PUBLIC_RPCS` are served: what a user's token may call, for the user's own
files. Everything else (the catalogue's bookkeeping for the services, the processor's dead letters,
quotas' limits) answers 404 here, whatever the token: the face is no way around the services' own
role checks, and it does not widen what a page can reach.

Every served RPC is forwarded unchanged: the request's bytes (binary Connect and gRPC-Web bodies as
received; JSON parsed strictly into the request message and serialized) go to the service's gRPC
port with the caller's ``authorization`` and ``x-request-id``, so the same servicer, the same token
check and the same request checks (``filestore.server.request_checks``) answer a page and a gRPC
client alike. A failed call's status, message and ``google.rpc.Status`` details (the one
``ErrorInfo``) come back as the Connect error.

connectrpc's own code generator would write this table per service as Python code; building it
from the descriptors of the generated ``_pb2`` modules keeps one generated artefact, and keeps the
list of public RPCs in one place that a test compares with the protos.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import grpc
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import Endpoint
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from filestore.core.auth import AUTHORIZATION_KEY
from filestore.core.channels import REQUEST_ID_KEY
from filestore.edge.wire import WireMessage, connect_error_from_grpc, unreachable_error
from filestore.v1 import (
    download_service_pb2,
    metadata_service_pb2,
    processor_service_pb2,
    upload_service_pb2,
)

if TYPE_CHECKING:
    from connectrpc._server_shared import EndpointUnary

__all__ = ["PUBLIC_RPCS", "UPSTREAMS", "Upstream", "endpoints"]


@dataclass(frozen=True, slots=True)
class Upstream:
    """A gRPC service the face forwards to: its name (in errors) and its descriptor."""

    name: str
    descriptor: ServiceDescriptor


UPSTREAMS: Final = {
    "upload": Upstream("upload", upload_service_pb2.DESCRIPTOR.services_by_name["UploadService"]),
    "metadata": Upstream("metadata", metadata_service_pb2.DESCRIPTOR.services_by_name["MetadataService"]),
    "download": Upstream("download", download_service_pb2.DESCRIPTOR.services_by_name["DownloadService"]),
    "processor": Upstream("processor", processor_service_pb2.DESCRIPTOR.services_by_name["ProcessorService"]),
}

#: upstream -> the RPCs a user's token may call. The upload API and the download signer whole; of
#: the catalogue, reading and managing one's own files, grants, derivatives, results and quota; of
#: the processor, a file's processing status and reprocessing one's own file. Not served: the
#: services' bookkeeping (BeginUpload, *UploadRecord, AttachStorageUpload, ClaimExpiredUploads,
#: FindAttachedStorageUploads, AuthorizeRead, StartProcessing, Record*, Create/TransitionFile,
#: CreateDerivative, QuarantineContent, ListUploadRecords, SetQuota, SetStoragePolicy, RecordReplica)
#: and the operators' dead letters.
PUBLIC_RPCS: Final[Mapping[str, tuple[str, ...]]] = {
    "upload": (
        "CreateUpload",
        "GetUpload",
        "SignParts",
        "CompleteUpload",
        "AbortUpload",
        "ListOpenUploads",
        "ListStores",
    ),
    "download": ("GetDownloadUrl", "BatchGetDownloadUrls", "GetDerivativeUrl"),
    "metadata": (
        "GetFile",
        "ListFiles",
        "UpdateFile",
        "DeleteFile",
        "CreateGrant",
        "ListGrants",
        "DeleteGrant",
        "ListDerivatives",
        "ListProcessingResults",
        "GetQuota",
        "GetStoragePolicy",
    ),
    "processor": ("GetProcessingStatus", "ReprocessFile"),
}

#: Caller headers passed on to the service as gRPC metadata: the bearer token and the request id.
_FORWARDED_HEADERS: Final = (AUTHORIZATION_KEY, REQUEST_ID_KEY)

Forward = Callable[[WireMessage, RequestContext[WireMessage, WireMessage]], Awaitable[WireMessage]]


def _message_class(descriptor: object) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)  # type: ignore[arg-type]


def _forwarder(
    channel: grpc.aio.Channel, upstream: Upstream, method: str, output: type[Message], max_timeout_s: float
) -> Forward:
    path = f"/{upstream.descriptor.full_name}/{method}"
    # No serializers: the request's bytes go to the service as they are, and its answer comes back
    # as bytes, parsed only when the caller asked for JSON.
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)

    async def forward(request: WireMessage, ctx: RequestContext[WireMessage, WireMessage]) -> WireMessage:
        metadata = tuple(
            (name, value) for name in _FORWARDED_HEADERS if (value := ctx.request_headers.get(name))
        )
        left_ms = ctx.timeout_ms
        timeout = max_timeout_s if left_ms is None else min(max_timeout_s, max(left_ms, 0.0) / 1000)
        try:
            answer: bytes = await call(request.data, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise connect_error_from_grpc(error, service=upstream.name) from None
        except grpc.aio.UsageError:
            raise unreachable_error(upstream.name) from None
        return WireMessage(answer, output)

    return forward


def endpoints(
    channels: Mapping[str, grpc.aio.Channel], *, max_timeout_s: float
) -> dict[str, EndpointUnary[WireMessage, WireMessage]]:
    """URL path (``/filestore.v1.UploadService/CreateUpload``) -> endpoint, for every public RPC."""
    served: dict[str, EndpointUnary[WireMessage, WireMessage]] = {}
    for name, methods in PUBLIC_RPCS.items():
        upstream = UPSTREAMS[name]
        for method in methods:
            descriptor = upstream.descriptor.methods_by_name[method]
            output = _message_class(descriptor.output_type)
            info: MethodInfo[WireMessage, WireMessage] = MethodInfo(
                name=method,
                service_name=upstream.descriptor.full_name,
                # The codecs (filestore.edge.wire) read these to parse and write JSON.
                input=_message_class(descriptor.input_type),  # type: ignore[arg-type]
                output=output,  # type: ignore[arg-type]
                # Never NO_SIDE_EFFECTS: that would let Connect GET put the request, session tokens
                # included, in the URL (the face refuses GET anyway).
                idempotency_level=IdempotencyLevel.UNKNOWN,
                stream_type=StreamType.UNARY,
            )
            served[f"/{upstream.descriptor.full_name}/{method}"] = Endpoint.unary(
                info, _forwarder(channels[name], upstream, method, output, max_timeout_s)
            )
    return served
