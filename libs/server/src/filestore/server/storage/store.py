"""The object store: every call Filestore makes to an S3-compatible bucket (SeaweedFS, MinIO, AWS S3),
and every URL it signs for one.

An :class:`ObjectStore` is one store, built from a :class:`StoreConfig` value; services build theirs
once (in their ``app.py``) and hand it to the code that needs it, which names the few methods it uses
in a ``Protocol`` of its own. Its answers are typed (:mod:`filestore.server.storage.results`); storage
that refuses unexpectedly is :class:`StorageRefused`, storage that does not answer is
``Unavailable``, both with reason ``STORAGE_UNAVAILABLE``.

Everything is async except :meth:`ObjectStore.stream`, which reads an object's bytes as a blocking
iterator: its consumers (a hash, clamd's socket, a scratch file) work in threads, and an async
iterator would cost a thread hop per chunk. Memory stays one chunk, whatever the object's size.

URLs for clients are signed by :class:`filestore.server.sigv4.SigV4Presigner` for the store's public
endpoint (pure computation, inline); the boto3 clients are made on first use, in a worker thread, so a
service that only signs (the download signer) never makes one and no event loop waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from filestore.core.errors import FailedPrecondition
from filestore.core.reasons import Reason
from filestore.server.sigv4 import (
    ChecksumName,
    PartChecksum,
    PartToSign,
    PostPolicy,
    PresignedUrl,
    SigV4Presigner,
)
from filestore.server.storage import clients
from filestore.server.storage.config import StoreConfig
from filestore.server.storage.errors import (
    CHECKSUM_REFUSED,
    NO_SUCH_OBJECT,
    NO_SUCH_UPLOAD,
    NOT_IMPLEMENTED,
    RANGE_NOT_SATISFIABLE,
    error_code,
    refused,
    storage_unavailable,
)
from filestore.server.storage.results import ListedObject, ObjectHead, OpenUpload, StoredPart

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef, CORSRuleTypeDef

__all__ = ["CORS_DENY_ALL_ORIGIN", "LIST_PAGE_SIZE", "ObjectStore", "cors_rules"]

#: An origin no browser can have (RFC 2606 reserves ``.invalid``). Used as the only allowed origin
#: when none is configured: SeaweedFS answers buckets *without* CORS rules from its process-wide
#: ``-s3.allowedOrigins``, which defaults to ``*``, so "no rules" would mean "every origin".
CORS_DENY_ALL_ORIGIN: Final = "https://cross-origin-disabled.invalid"
#: The most entries S3 answers in one page of a listing.
LIST_PAGE_SIZE: Final = 1000
#: The part size of a streamed copy between stores: what a copy holds in memory at most.
COPY_PART_BYTES: Final = 8 * 1024 * 1024
#: The largest object one CopyObject copies (S3's limit); larger ones are copied in parts.
COPY_OBJECT_MAX_BYTES: Final = 5 * 1024 * 1024 * 1024


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


def _etag(value: object) -> str:
    return str(value or "").strip('"')


def _listed_checksum(part: Mapping[str, Any]) -> PartChecksum | None:
    algorithm: ChecksumName
    for algorithm in ("crc32", "sha256"):
        listed = part.get(f"Checksum{algorithm.upper()}")
        if listed:
            return PartChecksum.from_base64(algorithm, str(listed))
    return None


class ObjectStore:
    """One bucket of one store, as :class:`StoreConfig` describes it."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._public = self._signer(config.public_endpoint)
        self._internal = self._signer(config.endpoint)
        self._clients_made = threading.Lock()
        self._control: S3Client | None = None
        self._streaming: S3Client | None = None

    def __repr__(self) -> str:
        return f"ObjectStore(name={self.config.name!r}, bucket={self.config.bucket!r})"

    @property
    def bucket(self) -> str:
        return self.config.bucket

    def _signer(self, endpoint: str) -> SigV4Presigner:
        return SigV4Presigner(
            endpoint=endpoint,
            region=self.config.region,
            access_key=self.config.credentials.access_key,
            secret_key=self.config.credentials.secret_key,
            bucket=self.config.bucket,
        )

    # ------------------------------------------------------------------------------ clients

    def _control_client(self) -> S3Client:
        """Made on first use (in a worker thread: making a client takes a tenth of a second)."""
        with self._clients_made:
            if self._control is None:
                self._control = clients.control_client(self.config)
            return self._control

    def _streaming_client(self) -> S3Client:
        with self._clients_made:
            if self._streaming is None:
                self._streaming = clients.streaming_client(self.config)
            return self._streaming

    async def _request(self, operation: str, /, **params: Any) -> dict[str, Any]:
        """One control call (``operation`` is boto3's name for it) on this store's bucket, bounded by
        :func:`clients.control_call`. A ``ClientError`` (storage refused) goes to the caller, who
        reads its code against :mod:`filestore.server.storage.errors`' table."""

        def call() -> dict[str, Any]:
            method: Callable[..., Mapping[str, Any]] = getattr(self._control_client(), operation)
            return dict(method(Bucket=self.config.bucket, **params))

        return await clients.control_call(call, key=params.get("Key"))

    # ------------------------------------------------------------------------------- bucket

    async def check_bucket(self) -> None:
        """That the bucket is there and ours to use (at start: a service that cannot reach its
        bucket should not start serving)."""
        try:
            await self._request("head_bucket")
        except ClientError as error:
            raise refused(error) from error

    async def apply_cors(self, origins: Sequence[str]) -> bool:
        """Replace the bucket's CORS rules with :func:`cors_rules` for ``origins``. Answers False,
        changing nothing, when the store has no bucket CORS at all (``NotImplemented``: MinIO's
        community edition and RustFS configure CORS for the whole server instead)."""
        try:
            await self._request("put_bucket_cors", CORSConfiguration={"CORSRules": cors_rules(origins)})
        except ClientError as error:
            if error_code(error) == NOT_IMPLEMENTED:
                return False
            raise refused(error) from error
        return True

    # ------------------------------------------------------------------------------ objects

    async def head(self, key: str) -> ObjectHead | None:
        """The object's size, ETag and stored SHA-256, or None when there is no such object."""
        try:
            head = await self._request("head_object", Key=key, ChecksumMode="ENABLED")
        except ClientError as error:
            if error_code(error) in NO_SUCH_OBJECT:
                return None
            raise refused(error, key=key) from error
        return ObjectHead(
            size=int(head["ContentLength"]),
            etag=_etag(head.get("ETag")),
            checksum_sha256=str(head.get("ChecksumSHA256") or ""),
        )

    async def list_objects(
        self, prefix: str, *, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncIterator[list[ListedObject]]:
        """The objects under ``prefix`` in key order, a page (up to ``page_size``) at a time."""
        token: dict[str, str] = {}
        while True:
            try:
                page = await self._request("list_objects_v2", Prefix=prefix, MaxKeys=page_size, **token)
            except ClientError as error:
                raise refused(error, key=prefix) from error
            yield [
                ListedObject(
                    key=str(item["Key"]),
                    size=int(item.get("Size", 0)),
                    etag=_etag(item.get("ETag")),
                    last_modified=item["LastModified"],
                )
                for item in page.get("Contents", [])
            ]
            next_token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not next_token:
                return
            token = {"ContinuationToken": str(next_token)}

    async def put(self, key: str, body: bytes, *, content_type: str) -> None:
        """Write a small object (a derivative) in one request; large bodies travel by presigned URL."""
        try:
            await self._request("put_object", Key=key, Body=body, ContentType=content_type)
        except ClientError as error:
            raise refused(error, key=key) from error

    async def delete(self, key: str) -> None:
        """Delete the object; one that is already gone is no error."""
        try:
            await self._request("delete_object", Key=key)
        except ClientError as error:
            if error_code(error) not in NO_SUCH_OBJECT:
                raise refused(error, key=key) from error

    # -------------------------------------------------------------------------------- reads

    async def read_range(self, key: str, *, start: int, length: int) -> bytes:
        """At most ``length`` bytes from offset ``start`` (one Range request): fewer when the object
        ends sooner, none when it ends before ``start`` (an empty object has no byte 0)."""
        if length <= 0:
            return b""

        def read() -> bytes:
            try:
                answer = self._streaming_client().get_object(
                    Bucket=self.config.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
                )
            except ClientError as error:
                if error_code(error) in RANGE_NOT_SATISFIABLE:
                    return b""
                raise refused(error, key=key) from error
            body = answer["Body"]
            try:
                return body.read(length)
            finally:
                body.close()

        return await clients.control_call(read, key=key)

    def stream(self, key: str, *, chunk_bytes: int) -> Iterator[bytes]:
        """The object in pieces of ``chunk_bytes``. Blocking: iterate it in a worker thread. Nothing
        is requested until the first piece is asked for, and the connection closes when the
        iterator does; a read that stalls longer than ``read_timeout_s`` ends it as
        ``STORAGE_UNAVAILABLE``, as does storage that does not answer."""
        try:
            body = self._streaming_client().get_object(Bucket=self.config.bucket, Key=key)["Body"]
            try:
                yield from body.iter_chunks(chunk_bytes)
            finally:
                body.close()
        except ClientError as error:
            raise refused(error, key=key) from error
        except BotoCoreError as error:
            raise storage_unavailable(error, key=key) from error

    # ------------------------------------------------------------------------ copies between stores

    async def copy_from(
        self, source: ObjectStore, key: str, *, part_bytes: int = COPY_PART_BYTES
    ) -> ObjectHead:
        """Copy ``key`` from ``source`` to the same key here; answers the copy's head.

        Server-side (``CopyObject``) when both stores are buckets of one endpoint and this one
        copies parts (``part_copy``): no byte leaves storage. Otherwise the bytes stream through this
        process, a GET read in pieces into a multipart PUT of ``part_bytes`` parts, so memory stays
        one part whatever the object's size (two SeaweedFS instances, two providers). Run by workers
        (the processor, the reconciler), never on an RPC's path. A copy that fails aborts its
        multipart upload and leaves no object; storage that refuses is ``StorageRefused``."""

        def server_side() -> None:
            self._streaming_client().copy_object(
                Bucket=self.config.bucket, Key=key, CopySource={"Bucket": source.config.bucket, "Key": key}
            )

        def streamed() -> None:
            client = self._streaming_client()
            upload_id = client.create_multipart_upload(Bucket=self.config.bucket, Key=key)["UploadId"]
            parts: list[CompletedPartTypeDef] = []

            def send(body: bytes) -> None:
                number = len(parts) + 1
                sent = client.upload_part(
                    Bucket=self.config.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                parts.append({"PartNumber": number, "ETag": sent["ETag"]})

            try:
                pending = bytearray()
                for chunk in source.stream(key, chunk_bytes=min(part_bytes, 1024 * 1024)):
                    pending += chunk
                    if len(pending) >= part_bytes:
                        send(bytes(pending[:part_bytes]))
                        del pending[:part_bytes]
                if pending or not parts:
                    send(bytes(pending))  # the last part may be short, or empty for an empty object
                client.complete_multipart_upload(
                    Bucket=self.config.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except BaseException:
                with contextlib.suppress(ClientError, BotoCoreError):
                    client.abort_multipart_upload(Bucket=self.config.bucket, Key=key, UploadId=upload_id)
                raise

        same_endpoint = source.config.endpoint == self.config.endpoint and self.config.part_copy
        try:
            await asyncio.to_thread(server_side if same_endpoint else streamed)
        except ClientError as error:
            raise refused(error, key=key) from error
        except BotoCoreError as error:
            raise storage_unavailable(error, key=key) from error
        head = await self.head(key)
        if head is None:
            raise storage_unavailable(RuntimeError("the copy is not there"), key=key)
        return head

    # ------------------------------------------------------------------------------- tiers

    async def storage_class(self, key: str) -> str | None:
        """The object's storage class (``STANDARD`` when storage names none), or None when there is
        no such object."""
        try:
            head = await self._request("head_object", Key=key)
        except ClientError as error:
            if error_code(error) in NO_SUCH_OBJECT:
                return None
            raise refused(error, key=key) from error
        return str(head.get("StorageClass") or "STANDARD")

    async def set_storage_class(self, key: str, storage_class: str) -> None:
        """Move the object to ``storage_class`` by copying it onto itself, server-side (no byte
        leaves storage): ``CopyObject`` up to 5 GiB, ``UploadPartCopy`` parts above (the transfer
        manager's multipart copy). The copy replaces the metadata (S3, and SeaweedFS, refuse a copy
        onto itself that changes nothing else), so the object's own headers are carried over."""
        try:
            head = await self._request("head_object", Key=key)
        except ClientError as error:
            raise refused(error, key=key) from error
        extra: dict[str, Any] = {
            "StorageClass": storage_class,
            "MetadataDirective": "REPLACE",
            "ContentType": head.get("ContentType") or "application/octet-stream",
            "Metadata": dict(head.get("Metadata") or {}),
        }
        for header in ("ContentDisposition", "ContentEncoding", "ContentLanguage", "CacheControl"):
            if head.get(header):
                extra[header] = head[header]

        def copy() -> None:
            self._streaming_client().copy(
                {"Bucket": self.config.bucket, "Key": key},
                self.config.bucket,
                key,
                ExtraArgs=extra,
                Config=TransferConfig(
                    multipart_threshold=COPY_OBJECT_MAX_BYTES, multipart_chunksize=COPY_PART_BYTES
                ),
            )

        try:
            await asyncio.to_thread(copy)
        except ClientError as error:
            raise refused(error, key=key) from error
        except BotoCoreError as error:
            raise storage_unavailable(error, key=key) from error

    # ---------------------------------------------------------------------- multipart uploads

    async def create_multipart(
        self, key: str, *, content_type: str, checksum_algorithm: ChecksumName | None = None
    ) -> str:
        """A new multipart upload, answering storage's id for it; with ``checksum_algorithm``, storage
        expects that checksum on every part and at completion (S3 refuses part checksums of an upload
        created without)."""
        extra = {"ChecksumAlgorithm": checksum_algorithm.upper()} if checksum_algorithm else {}
        try:
            created = await self._request(
                "create_multipart_upload", Key=key, ContentType=content_type, **extra
            )
        except ClientError as error:
            raise refused(error, key=key) from error
        return str(created["UploadId"])

    async def list_multipart_uploads(
        self, prefix: str, *, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncIterator[list[OpenUpload]]:
        """The multipart uploads open under ``prefix``, a page (up to ``page_size``) at a time.

        Storage may answer this in time proportional to every upload open in the bucket (SeaweedFS
        does), whatever the prefix: for background sweeps, never for a request's path.
        """
        markers: dict[str, str] = {}
        while True:
            try:
                page = await self._request(
                    "list_multipart_uploads", Prefix=prefix, MaxUploads=page_size, **markers
                )
            except ClientError as error:
                raise refused(error, key=prefix) from error
            yield [
                OpenUpload(
                    key=str(upload["Key"]), upload_id=str(upload["UploadId"]), initiated=upload["Initiated"]
                )
                for upload in page.get("Uploads", [])
                # Some stores answer uploads outside the prefix too.
                if str(upload.get("Key", "")).startswith(prefix) and upload.get("UploadId")
            ]
            # AWS S3 and MinIO order uploads by key and continue after (NextKeyMarker,
            # NextUploadIdMarker). SeaweedFS (4.48) orders them by upload id, answers no
            # NextKeyMarker, and continues after UploadIdMarker alone: given a KeyMarker too, it
            # stops after that key. So each marker goes back only when storage gave it.
            following = {
                name: str(page[f"Next{name}"])
                for name in ("KeyMarker", "UploadIdMarker")
                if page.get(f"Next{name}")
            }
            if not page.get("IsTruncated") or not following or following == markers:
                return
            markers = following

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        """Every part storage holds (every copy of a part sent again, on stores that keep them), or
        None when it knows no such multipart upload (completed or aborted)."""
        parts: list[StoredPart] = []
        marker = 0
        while True:
            try:
                page = await self._request(
                    "list_parts",
                    Key=key,
                    UploadId=upload_id,
                    MaxParts=LIST_PAGE_SIZE,
                    PartNumberMarker=marker,
                )
            except ClientError as error:
                if error_code(error) in NO_SUCH_UPLOAD:
                    return None
                raise refused(error, key=key) from error
            for part in page.get("Parts", []):
                last_modified: datetime | None = part.get("LastModified")
                parts.append(
                    StoredPart(
                        part_number=int(part["PartNumber"]),
                        size=int(part["Size"]),
                        etag=str(part["ETag"]),
                        last_modified=last_modified.timestamp() if last_modified is not None else 0.0,
                        checksum=_listed_checksum(part),
                    )
                )
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], checksums: Mapping[int, PartChecksum]
    ) -> bool:
        """Assemble the object from ``parts``, giving each part's checksum where ``checksums`` has one
        (an upload created with a checksum algorithm needs them all); False when storage no longer
        knows the upload (aborted, or completed by a concurrent call: SeaweedFS answers a repeated
        completion as a success, AWS S3 may not). A checksum storage refuses is
        ``FailedPrecondition`` ``CHECKSUM_MISMATCH``."""
        listed: list[dict[str, Any]] = []
        for part in parts:
            entry: dict[str, Any] = {"PartNumber": part.part_number, "ETag": part.etag}
            checksum = checksums.get(part.part_number)
            if checksum is not None:
                entry[f"Checksum{checksum.algorithm.upper()}"] = checksum.base64()
            listed.append(entry)
        try:
            await self._request(
                "complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
            )
        except ClientError as error:
            code = error_code(error)
            if code in NO_SUCH_UPLOAD:
                return False
            if code in CHECKSUM_REFUSED:
                raise FailedPrecondition(
                    "storage refused the parts: a checksum given differs from the stored part's"
                    " (or a part was sent again meanwhile)",
                    reason=Reason.CHECKSUM_MISMATCH,
                ) from error
            raise refused(error, key=key) from error
        return True

    async def abort_multipart(self, key: str, upload_id: str) -> bool:
        """Abort the upload and free its parts. False when storage says it knows no such upload, which
        is no error: aborting twice is fine (AWS S3 answers a second abort so; SeaweedFS answers it as
        a success, True)."""
        try:
            await self._request("abort_multipart_upload", Key=key, UploadId=upload_id)
        except ClientError as error:
            if error_code(error) in NO_SUCH_UPLOAD:
                return False
            raise refused(error, key=key) from error
        return True

    # ------------------------------------------------------------------------------ signing

    def presign_put(
        self, key: str, *, content_type: str, size: int, sha256_hex: str = "", expires_s: int
    ) -> PresignedUrl:
        """A client's PUT of a whole object (see :meth:`SigV4Presigner.presign_put`)."""
        return self._public.presign_put(
            key, content_type=content_type, size=size, sha256_hex=sha256_hex, expires_s=expires_s
        )

    def post_policy(self, key: str, *, content_type: str, size: int, expires_s: int) -> PostPolicy:
        """A browser's form upload of a whole object (see :meth:`SigV4Presigner.post_policy`)."""
        return self._public.post_policy(key, content_type=content_type, size=size, expires_s=expires_s)

    def presign_parts(
        self, key: str, *, upload_id: str, parts: Iterable[PartToSign], expires_s: int
    ) -> list[PresignedUrl]:
        """A client's PUTs of parts of one upload (see :meth:`SigV4Presigner.presign_parts`)."""
        return self._public.presign_parts(key, upload_id=upload_id, parts=parts, expires_s=expires_s)

    def presign_get(
        self,
        key: str,
        *,
        expires_s: int,
        response_content_type: str = "",
        response_content_disposition: str = "",
    ) -> PresignedUrl:
        """A client's GET of the object (see :meth:`SigV4Presigner.presign_get`)."""
        return self._public.presign_get(
            key,
            expires_s=expires_s,
            response_content_type=response_content_type,
            response_content_disposition=response_content_disposition,
        )

    def internal_get_url(self, key: str, *, expires_s: int) -> str:
        """A GET of the object for this service's own tools that read over HTTP with seeking
        (ffmpeg): signed for the endpoint the service reaches storage at, not the public one."""
        return self._internal.presign_get(key, expires_s=expires_s).url
