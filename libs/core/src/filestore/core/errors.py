"""Typed domain errors and their one mapping to gRPC statuses.

Servicers raise these; the error interceptor in :mod:`filestore.server.bootstrap` turns them into a
``google.rpc.Status`` carrying exactly one ``google.rpc.ErrorInfo`` (AIP-193). Clients of our own
services turn a failed call back into the same exception with :func:`error_from_rpc`, so a reason
travels unchanged from the metadata service through the broker to the caller.

An error is raised with a :class:`filestore.core.reasons.Reason`; the refusals built in several
places have a factory here (:func:`file_not_found`...), so that each is built one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Self

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from filestore.core.reasons import Reason

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FilestoreError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "derivative_not_found",
    "error_from_rpc",
    "file_not_found",
    "grant_not_found",
    "to_rpc_status",
    "upload_ended",
    "upload_not_found",
]


class FilestoreError(Exception):
    """Base of every error a Filestore RPC may answer with.

    ``reason`` is an UPPER_SNAKE identifier stable across releases (clients switch on it): a member of
    :class:`Reason` for an error raised here, any string for one received (:meth:`received`);
    ``message`` is for humans; ``metadata`` adds machine-readable detail (ids, limits).
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    default_reason: ClassVar[Reason] = Reason.UNKNOWN
    #: Whether a client may retry the same request unchanged (with backoff).
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason: str = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.domain = domain

    @classmethod
    def received(
        cls,
        message: str,
        *,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        domain: str | None = None,
    ) -> Self:
        """An error with the reason it came with, as a string: one another service answered (a newer
        service may give a reason this release does not know), or a copy of one."""
        error = cls(message, metadata=metadata, domain=domain)
        error.reason = reason
        return error

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidArgument(FilestoreError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = Reason.INVALID_ARGUMENT


class NotFound(FilestoreError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = Reason.NOT_FOUND


class AlreadyExists(FilestoreError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = Reason.ALREADY_EXISTS


class FailedPrecondition(FilestoreError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = Reason.FAILED_PRECONDITION


class Aborted(FilestoreError):
    code = grpc.StatusCode.ABORTED
    default_reason = Reason.ABORTED
    retryable = True


class ResourceExhausted(FilestoreError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = Reason.RESOURCE_EXHAUSTED


class PermissionDenied(FilestoreError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = Reason.PERMISSION_DENIED


class Unauthenticated(FilestoreError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = Reason.UNAUTHENTICATED


class Unavailable(FilestoreError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = Reason.UNAVAILABLE
    retryable = True


class DeadlineExceeded(FilestoreError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = Reason.DEADLINE_EXCEEDED
    retryable = True


class Unimplemented(FilestoreError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = Reason.NOT_IMPLEMENTED_YET


class Internal(FilestoreError):
    code = grpc.StatusCode.INTERNAL
    default_reason = Reason.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[FilestoreError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
        Internal,
    )
}


def to_rpc_status(error: FilestoreError, *, domain: str) -> status_pb2.Status:
    """The ``google.rpc.Status`` for ``error``, with exactly one ``ErrorInfo``."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=error.domain or domain, metadata=error.metadata
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])


STATUS_DETAILS_KEY = "grpc-status-details-bin"


def error_from_rpc(error: grpc.RpcError) -> FilestoreError:
    """Rebuild the typed error from a failed call to one of our services (or any gRPC server).

    The ``ErrorInfo`` reason, domain and metadata are kept when present; a status without one
    (a transport failure, a proxy) gets the code's default reason. Works for sync and asyncio calls.
    """
    code: grpc.StatusCode = getattr(error, "code", lambda: grpc.StatusCode.UNKNOWN)()
    message: str = getattr(error, "details", lambda: str(error))() or code.name
    cls = _BY_CODE.get(code, FilestoreError)
    trailing = getattr(error, "trailing_metadata", lambda: None)() or ()
    for key, value in trailing:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return cls.received(
                    status.message or message,
                    reason=info.reason,
                    metadata=dict(info.metadata),
                    domain=info.domain,
                )
    return cls(message)


# ------------------------------------------------------------------------------ factories
# The refusals several services (or several places of one) build: one message and one set of
# metadata each, wherever they are raised.


def file_not_found(file_id: str) -> NotFound:
    """No such file, or one the caller may not see: both answer the same (resources.proto, Tenancy)."""
    return NotFound("no such file", reason=Reason.FILE_NOT_FOUND, metadata={"file_id": file_id})


def upload_not_found(upload_id: str) -> NotFound:
    return NotFound("no such upload", reason=Reason.UPLOAD_NOT_FOUND, metadata={"upload_id": upload_id})


def grant_not_found(grant_id: str) -> NotFound:
    return NotFound("no such grant", reason=Reason.GRANT_NOT_FOUND, metadata={"grant_id": grant_id})


def derivative_not_found(file_id: str, kind: str) -> NotFound:
    return NotFound(
        "the file has no derivative of that kind",
        reason=Reason.DERIVATIVE_NOT_FOUND,
        metadata={"file_id": file_id, "kind": kind},
    )


#: Why an upload that has ended cannot be completed or ended again, by the state it ended in.
_ENDED = {
    "COMPLETED": Reason.UPLOAD_COMPLETED,
    "ABORTED": Reason.UPLOAD_ABORTED,
    "EXPIRED": Reason.UPLOAD_EXPIRED,
}


def upload_ended(upload_id: str, state: str) -> FailedPrecondition:
    """The upload ended as ``state`` (``COMPLETED``, ``ABORTED`` or ``EXPIRED``) already."""
    return FailedPrecondition(
        f"the upload is {state.lower()} already",
        reason=_ENDED[state],
        metadata={"upload_id": upload_id, "state": state},
    )
