"""What storage's answers mean: the one table of S3 error codes, the one helper that reads a code, and
the two errors a storage call ends with when it does not succeed.

Storage either refuses (it answered, with an error code: :class:`StorageRefused`) or does not answer
at all (a connection refused or timed out, a read that stalled, the RPC's own deadline coming first:
:func:`storage_unavailable`). Both are ``Unavailable`` with reason ``STORAGE_UNAVAILABLE`` for the
callers of a Filestore RPC; code that must tell them apart (the janitor retries only silence, the
processor's worker counts only silence and 5xx as an outage) tells them apart by type.
"""

from __future__ import annotations

from typing import Final

from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, HTTPClientError

from filestore.core.errors import Unavailable
from filestore.core.reasons import Reason

__all__ = [
    "CHECKSUM_REFUSED",
    "NOT_IMPLEMENTED",
    "NO_SUCH_OBJECT",
    "NO_SUCH_UPLOAD",
    "RANGE_NOT_SATISFIABLE",
    "TRANSPORT_ERRORS",
    "StorageRefused",
    "error_code",
    "refused",
    "storage_unavailable",
]

# The table. Each call reads an error's code with :func:`error_code` and looks it up in the set of
# the answers it expects; "404" is in two sets because a HEAD has no body to name what is missing.

#: The object is not there (HEAD answers a bare 404; GET and DELETE name it).
NO_SUCH_OBJECT: Final = frozenset({"404", "NoSuchKey", "NotFound"})
#: The multipart upload is not there: completed or aborted (ListParts, CompleteMultipartUpload,
#: AbortMultipartUpload).
NO_SUCH_UPLOAD: Final = frozenset({"404", "NoSuchUpload"})
#: A completion whose part checksums differ from the stored parts' (AWS S3: InvalidPart, which also
#: covers a part replaced between the listing and the completion; SeaweedFS: BadDigest). Either way
#: completing again, with the right checksums, is the remedy.
CHECKSUM_REFUSED: Final = frozenset({"BadDigest", "InvalidPart"})
#: A Range that starts past the object's end (every Range of an empty object does).
RANGE_NOT_SATISFIABLE: Final = frozenset({"InvalidRange"})
#: The store does not have the feature at all (MinIO's community edition for bucket CORS).
NOT_IMPLEMENTED: Final = "NotImplemented"

#: What botocore raises when storage could not be reached or stopped answering (a connect refused or
#: timed out, a read timed out, a connection dropped mid-answer), as opposed to storage refusing, or
#: a configuration storage can never be reached with (TLS, proxy).
TRANSPORT_ERRORS: Final = (EndpointConnectionError, ConnectTimeoutError, HTTPClientError)


def error_code(error: ClientError) -> str:
    """The S3 error code of a refusal (``NoSuchKey``, or the bare status of an answer without a
    body, such as ``404`` to a HEAD)."""
    return str(error.response.get("Error", {}).get("Code", ""))


class StorageRefused(Unavailable):
    """Storage answered, and refused with an error code the call did not expect (permissions, a
    bucket gone, a missing object where one must be, storage overloaded). ``storage_code`` is
    storage's error code, ``http_status`` its HTTP status (5xx: storage's own trouble, which may
    pass)."""

    def __init__(self, message: str, *, storage_code: str, http_status: int) -> None:
        super().__init__(message, reason=Reason.STORAGE_UNAVAILABLE)
        self.storage_code = storage_code
        self.http_status = http_status


def refused(error: ClientError, *, key: str | None = None) -> StorageRefused:
    """The :class:`StorageRefused` for a refusal the caller does not handle itself."""
    code = error_code(error)
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    about = f" about {key}" if key else ""
    return StorageRefused(
        f"storage refused a call{about}: {code} ({status})", storage_code=code, http_status=status
    )


def storage_unavailable(error: BaseException, *, key: str | None = None) -> Unavailable:
    """The error for a storage call that got no answer: botocore's connection and timeout errors (and
    its others: none of them is the caller's fault), or the RPC's own deadline coming first."""
    about = f" about {key}" if key else ""
    detail = str(error) or "the caller's deadline came first"
    return Unavailable(f"storage did not answer{about}: {detail}", reason=Reason.STORAGE_UNAVAILABLE)
