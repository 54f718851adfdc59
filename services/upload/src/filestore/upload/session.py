"""Upload sessions as capabilities: what SignParts needs to know of an upload, signed by the broker.

Signing a part URL needs a handful of facts about the upload (its storage key and storage upload
id, its part plan, its part checksum algorithm, its expiry) and the knowledge that the caller owns
it. Reading them from the catalogue costs a metadata call per SignParts. So when the broker hands
an OPEN multipart upload to its owner (CreateUpload, GetUpload) it adds those facts, bound to the
caller and sealed with HMAC-SHA256 (:mod:`filestore.server.seals`) under a key only the brokers
hold; SignParts then trusts the token it issued instead of asking the catalogue again.

Why that is safe: the catalogue can say two things the token cannot, that the upload was completed
or aborted since the token was issued. Neither needs saying: both end the multipart upload in
storage (the broker aborts or completes it, the reaper aborts it at expiry, and the sweep aborts any
storage upload no OPEN record holds), and storage refuses every part sent to an upload it no longer
has (S3 ``NoSuchUpload``; ``tests/test_upload_session.py`` holds SeaweedFS to it). A URL signed
from a stale token therefore carries no bytes anywhere. Expiry is in the token itself.

The token is opaque to clients, not secret from them: it names the caller's own upload, key and
storage upload id, all of which its part URLs show anyway.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from filestore.core.auth import Principal
from filestore.core.errors import FailedPrecondition, InvalidArgument
from filestore.core.reasons import Reason
from filestore.server.seals import Seal
from filestore.upload.plan import PartPlan
from filestore.v1 import metadata_service_pb2, resources_pb2

__all__ = [
    "SESSION_KEY_MIN_CHARS",
    "SessionTokens",
    "UploadSession",
    "parts_not_accepted",
    "session_token_invalid",
]

#: The shortest key accepted (as for ``FILESTORE_AUTH_SECRET``): 32 characters.
SESSION_KEY_MIN_CHARS = 32
#: The first byte of every token: a new layout gets a new number, and tokens of another are refused
#: (the SDK then signs through the catalogue and takes a fresh token from GetUpload).
_FORMAT_VERSION = 2
#: Separates this key from every other use of the same secret (identity tokens, page tokens).
_KEY_LABEL = "filestore upload session tokens"
#: Far above any real token (five short strings and a few numbers), far below a cost worth noticing.
_MAX_TOKEN_CHARS = 2048
#: version, expiry (Unix seconds), size, part size, part count, part checksum algorithm.
_NUMBERS = struct.Struct(">BqqqIB")
_LENGTH = struct.Struct(">H")


def parts_not_accepted() -> FailedPrecondition:
    """SignParts' answer for an upload that no longer takes parts, from the catalogue or a token."""
    return FailedPrecondition("the upload no longer accepts parts", reason=Reason.UPLOAD_NOT_OPEN)


def session_token_invalid(upload_id: str) -> InvalidArgument:
    # The same answer whatever is wrong (forged, altered, another upload's, another caller's):
    # the details would only help whoever is trying.
    return InvalidArgument(
        "the session token is not one this service issued for this upload and caller",
        reason=Reason.SESSION_TOKEN_INVALID,
        metadata={"upload_id": upload_id},
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadSession:
    """What signing part URLs needs to know of a multipart upload, for the caller it was handed to."""

    upload_id: str
    #: The caller the session belongs to: the subject and tenant of its token.
    subject: str
    tenant: str
    storage_key: str
    #: Empty until storage has created the multipart upload (no token is issued before that).
    storage_upload_id: str
    size: int
    part_size: int
    part_count: int
    part_checksum_algorithm: resources_pb2.ChecksumAlgorithm.ValueType
    #: The upload's expiry in Unix seconds, rounded down (a token ends a little early, never late);
    #: ``None`` for a record without one (no token is issued for it).
    expires_at_s: int | None
    #: The store the upload's bytes go to (its part URLs are signed for it).
    store: str = ""

    @classmethod
    def of(cls, record: metadata_service_pb2.UploadRecord, principal: Principal) -> UploadSession:
        return cls(
            upload_id=record.id,
            subject=principal.subject,
            tenant=principal.tenant,
            storage_key=record.storage_key,
            storage_upload_id=record.storage_upload_id,
            size=record.size,
            part_size=record.part_size,
            part_count=record.part_count,
            part_checksum_algorithm=record.part_checksum_algorithm,
            expires_at_s=record.expire_time.seconds if record.HasField("expire_time") else None,
            store=record.store,
        )

    @property
    def plan(self) -> PartPlan:
        return PartPlan(size=self.size, part_size=self.part_size, part_count=self.part_count)

    def expired(self, now_s: float | None = None) -> bool:
        if self.expires_at_s is None:
            return False
        return self.expires_at_s <= (time.time() if now_s is None else now_s)


class SessionTokens:
    """Issues and verifies session tokens under one key (every broker replica must share it)."""

    def __init__(self, secret: str) -> None:
        self._seal = Seal(secret, label=_KEY_LABEL, max_chars=_MAX_TOKEN_CHARS)

    def issue(self, session: UploadSession) -> str:
        """The token of ``session``, or ``""`` when it cannot stand alone: without a storage upload
        (SignParts must create one through the catalogue) or without an expiry (the token would
        never end)."""
        if not session.storage_upload_id or session.expires_at_s is None:
            return ""
        body = _NUMBERS.pack(
            _FORMAT_VERSION,
            session.expires_at_s,
            session.size,
            session.part_size,
            session.part_count,
            session.part_checksum_algorithm,
        ) + b"".join(
            _LENGTH.pack(len(raw)) + raw
            for raw in (
                text.encode()
                for text in (
                    session.upload_id,
                    session.subject,
                    session.tenant,
                    session.storage_key,
                    session.storage_upload_id,
                    session.store,
                )
            )
        )
        return self._seal.seal(body)

    def verify(
        self, token: str, *, upload_id: str, principal: Principal, now_s: float | None = None
    ) -> UploadSession:
        """The session ``token`` carries, if this service issued it for ``upload_id`` to
        ``principal`` (``SESSION_TOKEN_INVALID`` otherwise) and the upload has not expired
        (``UPLOAD_NOT_OPEN``, as SignParts answers from the catalogue)."""
        body = self._seal.open(token)
        session = None if body is None else _parse(body)
        if (
            session is None
            or session.upload_id != upload_id
            or session.subject != principal.subject
            or session.tenant != principal.tenant
        ):
            raise session_token_invalid(upload_id)
        if session.expired(now_s):
            raise parts_not_accepted()
        return session


def _parse(body: bytes) -> UploadSession | None:
    """The fields of an authentic body, checked all the same: a body of another layout is refused."""
    try:
        version, expires_at_s, size, part_size, part_count, algorithm = _NUMBERS.unpack_from(body)
        if version != _FORMAT_VERSION or algorithm not in resources_pb2.ChecksumAlgorithm.values():
            return None
        offset = _NUMBERS.size
        texts: list[str] = []
        for _ in range(6):
            (length,) = _LENGTH.unpack_from(body, offset)
            offset += _LENGTH.size
            if offset + length > len(body):
                return None
            texts.append(body[offset : offset + length].decode())
            offset += length
    except (struct.error, UnicodeDecodeError):
        return None
    if offset != len(body):
        return None
    upload_id, subject, tenant, storage_key, storage_upload_id, store = texts
    return UploadSession(
        upload_id=upload_id,
        subject=subject,
        tenant=tenant,
        storage_key=storage_key,
        storage_upload_id=storage_upload_id,
        size=size,
        part_size=part_size,
        part_count=part_count,
        part_checksum_algorithm=resources_pb2.ChecksumAlgorithm.ValueType(algorithm),
        expires_at_s=expires_at_s,
        store=store,
    )
