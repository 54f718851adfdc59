"""What the object store answers: typed values, never botocore's dictionaries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from filestore.server.sigv4 import PartChecksum

__all__ = ["ListedObject", "ObjectHead", "OpenUpload", "StoredPart"]


@dataclass(frozen=True, slots=True)
class ObjectHead:
    """An object as a HEAD describes it."""

    size: int
    #: Without the quotes S3 puts around it; it changes whenever the object is written again.
    etag: str
    #: Base64 SHA-256 storage computed or verified for a single PUT; empty when it has none.
    checksum_sha256: str


@dataclass(frozen=True, slots=True)
class ListedObject:
    """An object as a listing names it."""

    key: str
    size: int
    #: Without the quotes, as :attr:`ObjectHead.etag`.
    etag: str
    #: When it was last written (timezone-aware).
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class StoredPart:
    """A part of a multipart upload as storage lists it."""

    part_number: int
    size: int
    etag: str
    #: When storage received it (seconds since the epoch); orders re-sent copies of a part.
    last_modified: float = 0.0
    #: The part's checksum as storage reports it, when it reports one (AWS S3 lists them for
    #: uploads created with a checksum algorithm; SeaweedFS does not).
    checksum: PartChecksum | None = None


@dataclass(frozen=True, slots=True)
class OpenUpload:
    """A multipart upload storage holds open (neither completed nor aborted)."""

    key: str
    upload_id: str
    #: When storage created it (timezone-aware).
    initiated: datetime
