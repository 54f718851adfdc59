"""The bytes between the browser face and the services: messages carried as protobuf binary, the
Connect codecs that read and write them, and gRPC errors turned into Connect errors.

A request is parsed only when it arrives as JSON (strictly: an unknown field is refused, as it would
be by any typed client); binary requests are passed on as received, so the service's own request
checks judge them exactly as they judge a gRPC caller's. An answer is parsed only for a JSON caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import grpc
from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.errors import ConnectError, ErrorDetail
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from protobuf.wkt import Any as ConnectAny

from filestore.core.errors import STATUS_DETAILS_KEY
from filestore.core.reasons import Reason

__all__ = [
    "DOMAIN",
    "BinaryCodec",
    "JsonCodec",
    "WireMessage",
    "connect_error_from_grpc",
    "edge_error",
    "unreachable_error",
]

#: The ErrorInfo domain of errors the face itself gives (the services' errors keep their own).
DOMAIN: Final = "edge.filestore.v1"
_ANY_PREFIX: Final = "type.googleapis.com/"


@dataclass(frozen=True, slots=True)
class WireMessage:
    """One message as protobuf binary, with the class to parse it into when JSON is wanted."""

    data: bytes
    message_class: type[Message]


class BinaryCodec(Codec[WireMessage, WireMessage]):
    """``application/proto`` (and gRPC-Web's ``+proto``): bytes in, bytes out, unparsed."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: WireMessage) -> bytes:
        return message.data

    def decode(self, data: bytes | bytearray, message_class: type[WireMessage]) -> WireMessage:
        return WireMessage(bytes(data), message_class)  # type: ignore[arg-type]


class JsonCodec(Codec[WireMessage, WireMessage]):
    """``application/json``: the protobuf JSON mapping (lowerCamelCase names, or the proto names;
    int64 as strings; enums by name). Unknown fields are refused, not dropped."""

    def name(self) -> str:
        return "json"

    def encode(self, message: WireMessage) -> bytes:
        parsed = message.message_class.FromString(message.data)
        return json_format.MessageToJson(parsed, indent=None).encode()

    def decode(self, data: bytes | bytearray, message_class: type[WireMessage]) -> WireMessage:
        cls: type[Message] = message_class  # type: ignore[assignment]
        message = cls()
        try:
            json_format.Parse(bytes(data), message)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as error:
            raise edge_error(
                Code.INVALID_ARGUMENT,
                f"the request is not a {cls.DESCRIPTOR.full_name} in JSON: {error}",
                Reason.MALFORMED_REQUEST,
            ) from None
        return WireMessage(message.SerializeToString(), cls)


def _detail(type_url: str, value: bytes) -> ErrorDetail:
    return ErrorDetail(ConnectAny(type_url=type_url, value=value))


def edge_error(code: Code, message: str, reason: Reason, **metadata: str) -> ConnectError:
    """An error of the face itself, with one ErrorInfo as the services give theirs."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    return ConnectError(
        code, message, [_detail(_ANY_PREFIX + info.DESCRIPTOR.full_name, info.SerializeToString())]
    )


def unreachable_error(service: str) -> ConnectError:
    """The service did not answer (down, restarting, or unreachable): retryable."""
    return edge_error(
        Code.UNAVAILABLE, f"the {service} service did not answer; retry", Reason.UNAVAILABLE, service=service
    )


def connect_error_from_grpc(error: grpc.aio.AioRpcError, *, service: str) -> ConnectError:
    """The service's answer as a Connect error: the same code (Connect's codes are gRPC's), message
    and details (from ``grpc-status-details-bin``). A failure in transport, which carries no
    details, names the service that did not answer."""
    details: list[ErrorDetail] = []
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            details.extend(_detail(any_.type_url, any_.value) for any_ in status.details)
    code = error.code()
    if not details and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        if code == grpc.StatusCode.UNAVAILABLE:
            return unreachable_error(service)
        return edge_error(
            Code.DEADLINE_EXCEEDED,
            f"the {service} service did not answer before the deadline",
            Reason.DEADLINE_EXCEEDED,
            service=service,
        )
    return ConnectError(_CODES.get(code, Code.UNKNOWN), error.details() or "", details)


_CODES: Final = {
    **{status: Code[status.name] for status in grpc.StatusCode if status.name in Code.__members__},
    grpc.StatusCode.CANCELLED: Code.CANCELED,
}
