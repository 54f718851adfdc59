"""The object store as the broker needs it: control calls only (multipart bookkeeping, HEAD,
delete, bucket CORS). No method here ever carries file content.

``ObjectStore`` is the port; ``S3ObjectStore`` the adapter for any S3 API (SeaweedFS, MinIO, AWS),
running boto3's blocking calls in worker threads. Every call is bounded
(:func:`filestore.server.s3.control_call`): storage that does not answer is
``Unavailable(reason=Reason.STORAGE_UNAVAILABLE)``, before the caller's deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from botocore.exceptions import ClientError

from filestore.core.errors import FailedPrecondition, Unavailable
from filestore.core.reasons import Reason
from filestore.server import s3
from filestore.server.sigv4 import ChecksumName, PartChecksum

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CORSRuleTypeDef

__all__ = [
    "CORS_DENY_ALL_ORIGIN",
    "ObjectHead",
    "ObjectStore",
    "OpenMultipartUpload",
    "S3ObjectStore",
    "StoredPart",
    "cors_rules",
]

_MISSING_OBJECT = frozenset({"404", "NoSuchKey", "NotFound"})
_MISSING_UPLOAD = frozenset({"NoSuchUpload", "404"})
#: How S3 stores refuse a completion whose part checksums differ from the stored parts' (AWS S3:
#: InvalidPart, which also covers a part replaced between our listing and the completion;
#: SeaweedFS: BadDigest). Either way completing again, with the right checksums, is the remedy.
_CHECKSUM_REFUSED = frozenset({"BadDigest", "InvalidPart"})
#: An origin no browser can have (RFC 2606 reserves ``.invalid``). Used as the only allowed origin
#: when none is configured: SeaweedFS answers buckets *without* CORS rules from its process-wide
#: ``-s3.allowedOrigins``, which defaults to ``*``, so "no rules" would mean "every origin".
CORS_DENY_ALL_ORIGIN = "https://cross-origin-disabled.invalid"


@dataclass(frozen=True, slots=True)
class StoredPart:
    """A part as storage lists it."""

    part_number: int
    size: int
    etag: str
    #: When storage received it (seconds since the epoch); orders re-sent copies of a part.
    last_modified: float = 0.0
    #: The part's checksum as storage reports it, when it reports one (AWS S3 lists them for
    #: uploads created with a checksum algorithm; SeaweedFS does not).
    checksum: PartChecksum | None = None


@dataclass(frozen=True, slots=True)
class OpenMultipartUpload:
    """A multipart upload storage holds open (neither completed nor aborted)."""

    key: str
    upload_id: str
    #: When storage created it (timezone-aware).
    initiated: datetime


@dataclass(frozen=True, slots=True)
class ObjectHead:
    size: int
    etag: str
    #: Base64 SHA-256 storage computed or verified for a single PUT; empty when it has none.
    checksum_sha256: str


@runtime_checkable
class ObjectStore(Protocol):
    async def head(self, key: str) -> ObjectHead | None: ...
    async def delete(self, key: str) -> None: ...
    async def create_multipart(
        self, key: str, *, content_type: str, checksum_algorithm: ChecksumName | None = None
    ) -> str: ...
    def open_multipart_uploads(self, prefix: str) -> AsyncIterator[list[OpenMultipartUpload]]: ...
    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None: ...
    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], checksums: Mapping[int, PartChecksum]
    ) -> bool: ...
    async def abort_multipart(self, key: str, upload_id: str) -> None: ...
    async def apply_cors(self, origins: Sequence[str]) -> None: ...


def _listed_checksum(part: Any) -> PartChecksum | None:
    for algorithm in ("crc32", "sha256"):
        listed = part.get(f"Checksum{algorithm.upper()}")
        if listed:
            return PartChecksum.from_base64(algorithm, str(listed))
    return None


def cors_rules(origins: Sequence[str]) -> list[CORSRuleTypeDef]:
    """Browsers may PUT parts, POST forms and read ETag (to complete multipart uploads) from these
    origins only. Headers are ``*`` because the signature, not CORS, decides what a request may
    carry: a header that was not signed fails the signature anyway."""
    return [
        {
            "AllowedOrigins": list(origins) or [CORS_DENY_ALL_ORIGIN],
            "AllowedMethods": ["PUT", "POST", "GET", "HEAD"],
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 600,
        }
    ]


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3ObjectStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    async def _call(self, name: str, **kwargs: Any) -> dict[str, Any]:
        """A ``ClientError`` (storage refused) goes to the caller, who decides which codes mean
        "missing"; no answer is STORAGE_UNAVAILABLE."""
        return dict(await s3.control_call(getattr(self._client, name), Bucket=self._bucket, **kwargs))

    @staticmethod
    def _unavailable(error: ClientError) -> Unavailable:
        return Unavailable(
            f"storage refused a control call: {_code(error)}", reason=Reason.STORAGE_UNAVAILABLE
        )

    async def check_bucket(self) -> None:
        """That the bucket is there and ours to use (at start: a service that cannot reach its
        bucket should not start serving)."""
        try:
            await self._call("head_bucket")
        except ClientError as error:
            raise self._unavailable(error) from error

    async def head(self, key: str) -> ObjectHead | None:
        try:
            head = await self._call("head_object", Key=key, ChecksumMode="ENABLED")
        except ClientError as error:
            if _code(error) in _MISSING_OBJECT:
                return None
            raise self._unavailable(error) from error
        return ObjectHead(
            size=int(head["ContentLength"]),
            etag=str(head.get("ETag", "")).strip('"'),
            checksum_sha256=str(head.get("ChecksumSHA256") or ""),
        )

    async def delete(self, key: str) -> None:
        try:
            await self._call("delete_object", Key=key)
        except ClientError as error:
            if _code(error) not in _MISSING_OBJECT:
                raise self._unavailable(error) from error

    async def create_multipart(
        self, key: str, *, content_type: str, checksum_algorithm: ChecksumName | None = None
    ) -> str:
        """A new multipart upload; with ``checksum_algorithm``, storage expects that checksum on
        every part and at completion (S3 refuses part checksums of an upload created without)."""
        extra = {"ChecksumAlgorithm": checksum_algorithm.upper()} if checksum_algorithm else {}
        try:
            created = await self._call("create_multipart_upload", Key=key, ContentType=content_type, **extra)
        except ClientError as error:
            raise self._unavailable(error) from error
        return str(created["UploadId"])

    async def open_multipart_uploads(self, prefix: str) -> AsyncIterator[list[OpenMultipartUpload]]:
        """The multipart uploads open under ``prefix``, a page (up to 1,000) at a time.

        Storage may answer this in time proportional to every upload open in the bucket (SeaweedFS
        does), whatever the prefix: for background sweeps, never for a request's path.
        """
        markers: dict[str, str] = {}
        while True:
            try:
                page = await self._call("list_multipart_uploads", Prefix=prefix, MaxUploads=1000, **markers)
            except ClientError as error:
                raise self._unavailable(error) from error
            yield [
                OpenMultipartUpload(
                    key=str(upload["Key"]), upload_id=str(upload["UploadId"]), initiated=upload["Initiated"]
                )
                for upload in page.get("Uploads", [])
                if str(upload.get("Key", "")).startswith(prefix) and upload.get("UploadId")
            ]
            if not page.get("IsTruncated") or not page.get("NextKeyMarker"):
                return
            markers = {
                "KeyMarker": str(page.get("NextKeyMarker", "")),
                "UploadIdMarker": str(page.get("NextUploadIdMarker", "")),
            }

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        """Every part storage holds, or None when it knows no such multipart upload (completed
        or aborted)."""
        parts: list[StoredPart] = []
        marker = 0
        while True:
            try:
                page = await self._call(
                    "list_parts", Key=key, UploadId=upload_id, MaxParts=1000, PartNumberMarker=marker
                )
            except ClientError as error:
                if _code(error) in _MISSING_UPLOAD:
                    return None
                raise self._unavailable(error) from error
            for part in page.get("Parts", []):
                parts.append(
                    StoredPart(
                        part_number=int(part["PartNumber"]),
                        size=int(part["Size"]),
                        etag=str(part["ETag"]),
                        last_modified=part["LastModified"].timestamp() if "LastModified" in part else 0.0,
                        checksum=_listed_checksum(part),
                    )
                )
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], checksums: Mapping[int, PartChecksum]
    ) -> bool:
        """Assemble the object, giving each part's checksum where ``checksums`` has one (an upload
        created with a checksum algorithm needs them all); False when storage no longer knows the
        upload (completed by a concurrent call, or aborted)."""
        listed: list[Any] = []
        for part in parts:
            entry: dict[str, Any] = {"PartNumber": part.part_number, "ETag": part.etag}
            checksum = checksums.get(part.part_number)
            if checksum is not None:
                entry[f"Checksum{checksum.algorithm.upper()}"] = checksum.base64()
            listed.append(entry)
        try:
            await self._call(
                "complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
            )
        except ClientError as error:
            code = _code(error)
            if code in _MISSING_UPLOAD:
                return False
            if code in _CHECKSUM_REFUSED:
                raise FailedPrecondition(
                    "storage refused the parts: a checksum given differs from the stored part's"
                    " (or a part was sent again meanwhile)",
                    reason=Reason.CHECKSUM_MISMATCH,
                ) from error
            raise self._unavailable(error) from error
        return True

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
        except ClientError as error:
            if _code(error) not in _MISSING_UPLOAD:
                raise self._unavailable(error) from error

    async def apply_cors(self, origins: Sequence[str]) -> None:
        try:
            await self._call("put_bucket_cors", CORSConfiguration={"CORSRules": cors_rules(origins)})
        except ClientError as error:
            raise self._unavailable(error) from error
