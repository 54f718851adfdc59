"""Errors of the SDK.

A refused RPC raises the same typed exception the services raise (:mod:`filestore.core.errors`), with
the server's ``ErrorInfo`` reason, domain and metadata: callers switch on ``error.reason``. Storage
answers presigned requests with plain HTTP and no ``ErrorInfo``, so two errors of our own cover it;
both are :class:`FilestoreError` too, so one ``except FilestoreError`` catches everything the SDK
raises on purpose. Retries exhausted against an unavailable storage raise :class:`Unavailable` with
reason ``STORAGE_UNAVAILABLE``. :class:`Reason` names every reason (``error.reason == Reason.URL_EXPIRED``).
"""

from __future__ import annotations

import grpc

from filestore.core.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FilestoreError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from filestore.core.reasons import Reason

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FilestoreError",
    "IntegrityError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Reason",
    "ResourceExhausted",
    "StorageRejected",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


class StorageRejected(FilestoreError):
    """Storage refused a presigned request for good: a 4xx other than an expired URL or 429.

    ``metadata`` holds ``status`` (the HTTP status), ``storage_code`` (S3's ``<Code>``, when the body
    had one) and, for parts, ``part_number``. Retrying the same request would fail the same way.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = Reason.STORAGE_REJECTED


class IntegrityError(FilestoreError):
    """Downloaded bytes do not match the file's recorded size or SHA-256; the partial file is removed."""

    code = grpc.StatusCode.DATA_LOSS
    default_reason = Reason.CHECKSUM_MISMATCH
