"""Checks on what clients declare, shared by every service that accepts it. A refused value raises
InvalidArgument with a precise reason; names are metadata only and never part of a storage key."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from filestore.core.errors import InvalidArgument

__all__ = [
    "MAX_LABELS",
    "MAX_NAME_CHARS",
    "check_content_type",
    "check_crc32",
    "check_labels",
    "check_sha256",
    "clean_name",
]

MAX_NAME_CHARS = 255
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 255
_LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# RFC 6838 restricted-name characters for type and subtype; parameters are not accepted here.
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CRC32 = re.compile(r"^[0-9a-f]{8}$")
# Bidirectional overrides and isolates make "evil\u202egnp.exe" display as "evilexe.png".
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def clean_name(name: str) -> str:
    """The display name to store: NFC-normalized and trimmed. Control and format characters
    (bidirectional overrides among them), empty and over-long names are refused rather than silently
    altered, so what users see is what was sent. Path separators are harmless: keys never hold names."""
    normalized = unicodedata.normalize("NFC", name).strip()
    if not normalized:
        raise InvalidArgument("name must not be empty", reason="INVALID_NAME")
    if len(normalized) > MAX_NAME_CHARS:
        raise InvalidArgument(
            f"name is longer than {MAX_NAME_CHARS} characters",
            reason="INVALID_NAME",
            metadata={"max_chars": str(MAX_NAME_CHARS)},
        )
    for char in normalized:
        if char in _BIDI_CONTROLS or unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidArgument(
                f"name contains the forbidden character U+{ord(char):04X}", reason="INVALID_NAME"
            )
    return normalized


def check_content_type(content_type: str, *, allowed: tuple[str, ...] = ()) -> str:
    """``type/subtype`` in lower case; with ``allowed``, one of those (``image/*`` wildcards work)."""
    normalized = content_type.strip().lower()
    if not _CONTENT_TYPE.match(normalized):
        raise InvalidArgument("content_type must be type/subtype", reason="INVALID_CONTENT_TYPE")
    if allowed and not any(
        normalized == rule or (rule.endswith("/*") and normalized.startswith(rule[:-1])) for rule in allowed
    ):
        raise InvalidArgument(f"content type {normalized} is not allowed", reason="CONTENT_TYPE_NOT_ALLOWED")
    return normalized


def check_sha256(sha256: str) -> str:
    """Empty (not declared) or 64 lower-case hex characters."""
    if sha256 and not _SHA256.match(sha256):
        raise InvalidArgument("sha256 must be 64 lower-case hex characters", reason="INVALID_SHA256")
    return sha256


def check_crc32(crc32: str) -> str:
    """8 lower-case hex characters: a CRC32, big-endian, as S3's ``x-amz-checksum-crc32`` holds it."""
    if not _CRC32.match(crc32):
        raise InvalidArgument("crc32 must be 8 lower-case hex characters", reason="INVALID_CRC32")
    return crc32


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """At most 64 labels; keys 1-63 of ``[a-z0-9_-]`` starting alphanumeric; values up to 255 chars."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(
            f"at most {MAX_LABELS} labels", reason="INVALID_LABELS", metadata={"max_labels": str(MAX_LABELS)}
        )
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise InvalidArgument(
                f"label key {key[:64]!r} is not [a-z0-9_-]{{1,63}}", reason="INVALID_LABELS"
            )
        if len(value) > MAX_LABEL_VALUE_CHARS or any(
            unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in value
        ):
            raise InvalidArgument(
                f"label {key!r}: value over {MAX_LABEL_VALUE_CHARS} characters or with control characters",
                reason="INVALID_LABELS",
            )
    return dict(labels)
