"""AWS Signature Version 4 for the requests Filestore hands to clients: the broker's PUT of a whole
object, PUT of one part of a multipart upload and browser POST policy, and the download signer's GET.

Why not botocore's ``generate_presigned_url``: it is correct but general (it resolves endpoints,
builds a request object and runs event hooks for every URL), and costs ~70 times the signing math
itself. A multipart upload of a large file needs thousands of part URLs, CreateUpload/GetUpload
sign on every call and GetDownloadUrl is the hottest RPC of all, so both services sign with this
narrow implementation of the same algorithm
(https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html). It derives the
signing key once per day (the key only depends on date, region and service) and does no I/O. Its
URLs are checked byte for byte against botocore's in the tests, and accepted by the real storage.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote, urlsplit

__all__ = ["ChecksumName", "PartChecksum", "PartToSign", "PostPolicy", "PresignedUrl", "SigV4Presigner"]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_SERVICE = "s3"
# RFC 3986 unreserved characters stay as they are; everything else is percent-encoded (SigV4 rule).
_SAFE = "-_.~"


ChecksumName = Literal["crc32", "sha256"]


@dataclass(frozen=True, slots=True)
class PartChecksum:
    """A checksum of a part's body that storage verifies: S3's ``x-amz-checksum-<algorithm>``
    header (and ``Checksum<ALGORITHM>`` of a completed part), whose value is the base64 of the
    digest; kept here in lower-case hex."""

    algorithm: ChecksumName
    hex: str

    @classmethod
    def from_base64(cls, algorithm: ChecksumName, value: str) -> PartChecksum:
        return cls(algorithm, base64.b64decode(value).hex())

    def base64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.hex)).decode()

    def header(self) -> tuple[str, str]:
        return f"x-amz-checksum-{self.algorithm}", self.base64()


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
_UNRESERVED_OR_SLASH = re.compile(r"[A-Za-z0-9_.~/-]*")


@functools.lru_cache(maxsize=1024)
def _quote(value: str, safe: str) -> str:
    return quote(value, safe=safe)


def _uri_encode(value: str, *, keep_slash: bool = False) -> str:
    # Most values (ids, dates, numbers) need no escaping, and urllib's quote is the largest cost
    # of a signature; the few that do (credential scope, signed-header list) repeat, so are cached.
    if (_UNRESERVED_OR_SLASH if keep_slash else _UNRESERVED).fullmatch(value):
        return value
    return _quote(value, _SAFE + ("/" if keep_slash else ""))


@dataclass(frozen=True, slots=True)
class PartToSign:
    """One part of a multipart upload to sign a PUT for: its number, its exact length, and the
    checksum storage is to verify (if any)."""

    number: int
    size: int
    checksum: PartChecksum | None = None


@dataclass(frozen=True, slots=True)
class PresignedUrl:
    """A signed URL and the headers that were signed with it (the client must send them)."""

    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PostPolicy:
    """A signed browser form: POST ``url`` with ``fields`` first and the file last."""

    url: str
    fields: dict[str, str]
    expires_at: datetime


class SigV4Presigner:
    """Presigns path-style S3 requests for one endpoint, bucket and set of credentials.

    Thread-safe in practice: the only mutable state is the one-entry signing-key cache, and a race
    on it at midnight just derives the same key twice.
    """

    def __init__(self, *, endpoint: str, region: str, access_key: str, secret_key: str, bucket: str) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint must be an http(s) URL, not {endpoint!r}")
        self._base = f"{parts.scheme}://{parts.netloc}"
        # Botocore (and so every S3 server) signs the host with its port unless it is the default.
        default_port = {"http": 80, "https": 443}[parts.scheme]
        self._host = (parts.hostname or "") if parts.port in (None, default_port) else parts.netloc
        self._path_prefix = parts.path.rstrip("/")
        self._region = region
        self._access_key = access_key
        self._secret = secret_key.encode()
        self._bucket = bucket
        self._key_date = ""
        self._key = b""

    @property
    def bucket_url(self) -> str:
        return f"{self._base}{self._path_prefix}/{_uri_encode(self._bucket)}"

    def signing_key(self, date: str) -> bytes:
        """HMAC chain ``AWS4<secret> → date → region → s3 → aws4_request``, cached for the day."""
        if date != self._key_date:
            key = hmac.digest(b"AWS4" + self._secret, date.encode(), "sha256")
            for step in (self._region, _SERVICE, "aws4_request"):
                key = hmac.digest(key, step.encode(), "sha256")
            self._key, self._key_date = key, date
        return self._key

    def presign(
        self,
        method: str,
        key: str,
        *,
        expires_s: int,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> PresignedUrl:
        """A query-string-signed URL for ``method`` on ``key``; ``headers`` are signed and must be
        sent unchanged (names are matched case-insensitively, as HTTP does)."""
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        scope = f"{date}/{self._region}/{_SERVICE}/aws4_request"
        signed = {"host": self._host}
        for name, value in (headers or {}).items():
            signed[name.lower()] = " ".join(str(value).split())
        names = sorted(signed)
        signed_headers = ";".join(names)
        params = {
            **(query or {}),
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{self._access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires_s),
            "X-Amz-SignedHeaders": signed_headers,
        }
        canonical_query = "&".join(
            f"{_uri_encode(name)}={_uri_encode(value)}" for name, value in sorted(params.items())
        )
        path = f"{self._path_prefix}/{_uri_encode(self._bucket)}/{_uri_encode(key, keep_slash=True)}"
        canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
        canonical_request = (
            f"{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{UNSIGNED_PAYLOAD}"
        )
        string_to_sign = (
            f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
        )
        signature = hmac.digest(self.signing_key(date), string_to_sign.encode(), "sha256").hex()
        return PresignedUrl(
            url=f"{self._base}{path}?{canonical_query}&X-Amz-Signature={signature}",
            headers={
                name: value for name, value in (headers or {}).items() if name.lower() != "content-length"
            },
            expires_at=moment + timedelta(seconds=expires_s),
        )

    def presign_put(
        self,
        key: str,
        *,
        content_type: str,
        size: int,
        sha256_hex: str = "",
        expires_s: int,
        now: datetime | None = None,
    ) -> PresignedUrl:
        """A whole-object PUT pinning type, length and (when given) the SHA-256 of the body.

        ``If-None-Match: *`` is signed too, which makes the object write-once: storage refuses a
        second PUT to the key (412), so the URL cannot replace bytes that were verified, scanned and
        handed out after the upload completed. A client that retries a PUT which in fact succeeded
        gets the 412 and goes on to complete the upload, whose HEAD finds the object.
        """
        headers = {"Content-Length": str(size), "Content-Type": content_type, "If-None-Match": "*"}
        if sha256_hex:
            headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        return self.presign("PUT", key, expires_s=expires_s, headers=headers, now=now)

    def presign_get(
        self,
        key: str,
        *,
        expires_s: int,
        response_content_type: str = "",
        response_content_disposition: str = "",
        now: datetime | None = None,
    ) -> PresignedUrl:
        """A GET of the object; storage answers with the given Content-Type and Content-Disposition
        (signed into the URL, so they cannot be changed without breaking it)."""
        query: dict[str, str] = {}
        if response_content_disposition:
            query["response-content-disposition"] = response_content_disposition
        if response_content_type:
            query["response-content-type"] = response_content_type
        return self.presign("GET", key, expires_s=expires_s, query=query, now=now)

    def presign_part(
        self,
        key: str,
        *,
        upload_id: str,
        part_number: int,
        size: int,
        checksum: PartChecksum | None = None,
        expires_s: int,
        now: datetime | None = None,
    ) -> PresignedUrl:
        """One part's PUT, pinning its length and (when given) its checksum."""
        (signed,) = self.presign_parts(
            key,
            upload_id=upload_id,
            parts=[PartToSign(part_number, size, checksum)],
            expires_s=expires_s,
            now=now,
        )
        return signed

    def presign_parts(
        self,
        key: str,
        *,
        upload_id: str,
        parts: Iterable[PartToSign],
        expires_s: int,
        now: datetime | None = None,
    ) -> list[PresignedUrl]:
        """The PUTs of many parts of one multipart upload, each pinning its length and (when given)
        its checksum: the same URLs :meth:`presign` makes, one by one, for each part.

        A batch of part URLs is what a large upload asks for most, and all its URLs share their
        date, scope, path and all but one query parameter: those are encoded once here, so a part
        costs its canonical request's hash and one HMAC (about a third of a general signature).
        """
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        scope = f"{date}/{self._region}/{_SERVICE}/aws4_request"
        signing_key = self.signing_key(date)
        path = f"{self._path_prefix}/{_uri_encode(self._bucket)}/{_uri_encode(key, keep_slash=True)}"
        upload_param = f"&uploadId={_uri_encode(upload_id)}"
        expires_at = moment + timedelta(seconds=expires_s)
        # Per signed-header set (with or without a checksum, and which): the signed-header list and
        # the query up to the part number. Every X-Amz-* name sorts before "partNumber" and
        # "uploadId" (upper case first), which is the order SigV4's canonical query needs.
        frames: dict[str, tuple[str, str]] = {}
        signed_urls = []
        for part in parts:
            checksum_header = f"x-amz-checksum-{part.checksum.algorithm}" if part.checksum else ""
            frame = frames.get(checksum_header)
            if frame is None:
                names = sorted(["content-length", "host", *([checksum_header] if checksum_header else [])])
                signed_headers = ";".join(names)
                common = (
                    f"X-Amz-Algorithm={ALGORITHM}"
                    f"&X-Amz-Credential={_uri_encode(f'{self._access_key}/{scope}')}"
                    f"&X-Amz-Date={amz_date}&X-Amz-Expires={expires_s}"
                    f"&X-Amz-SignedHeaders={_uri_encode(signed_headers)}&partNumber="
                )
                frame = frames[checksum_header] = (signed_headers, common)
            signed_headers, common = frame
            query = f"{common}{part.number}{upload_param}"
            checksum_value = part.checksum.base64() if part.checksum else ""
            canonical_headers = f"content-length:{part.size}\nhost:{self._host}\n" + (
                f"{checksum_header}:{checksum_value}\n" if checksum_header else ""
            )
            canonical_request = (
                f"PUT\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{UNSIGNED_PAYLOAD}"
            )
            string_to_sign = (
                f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
            )
            signature = hmac.digest(signing_key, string_to_sign.encode(), "sha256").hex()
            signed_urls.append(
                PresignedUrl(
                    url=f"{self._base}{path}?{query}&X-Amz-Signature={signature}",
                    headers={checksum_header: checksum_value} if checksum_header else {},
                    expires_at=expires_at,
                )
            )
        return signed_urls

    def post_policy(
        self,
        key: str,
        *,
        content_type: str,
        size: int,
        expires_s: int,
        now: datetime | None = None,
    ) -> PostPolicy:
        """A POST policy for an HTML form: exactly this key, this content type and this many bytes
        (``content-length-range`` with both bounds equal to the declared size)."""
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        credential = f"{self._access_key}/{date}/{self._region}/{_SERVICE}/aws4_request"
        expires_at = moment + timedelta(seconds=expires_s)
        fields = {
            "key": key,
            "Content-Type": content_type,
            "x-amz-algorithm": ALGORITHM,
            "x-amz-credential": credential,
            "x-amz-date": amz_date,
        }
        policy = {
            "expiration": expires_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conditions": [
                {"bucket": self._bucket},
                ["eq", "$key", key],
                ["eq", "$Content-Type", content_type],
                ["content-length-range", size, size],
                {"x-amz-algorithm": ALGORITHM},
                {"x-amz-credential": credential},
                {"x-amz-date": amz_date},
            ],
        }
        encoded = base64.b64encode(json.dumps(policy, separators=(",", ":")).encode()).decode()
        fields["policy"] = encoded
        fields["x-amz-signature"] = hmac.new(self.signing_key(date), encoded.encode(), "sha256").hexdigest()
        return PostPolicy(url=self.bucket_url, fields=fields, expires_at=expires_at)
