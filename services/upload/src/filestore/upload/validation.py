"""Checks on what clients declare. A refused value raises InvalidArgument with a precise reason and
never reaches storage; names are metadata only and never part of a key."""

from __future__ import annotations

import re
import unicodedata

from filestore.core.errors import InvalidArgument, ResourceExhausted

__all__ = ["check_content_type", "check_sha256", "check_size", "clean_name"]

MAX_NAME_CHARS = 255
# RFC 6838 restricted-name characters for type and subtype; parameters are not accepted here.
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Bidirectional overrides and isolates make "evil\u202egnp.exe" display as "evilexe.png".
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def clean_name(name: str) -> str:
    """The display name to store: NFC-normalized and trimmed; control characters, bidirectional
    controls, empty and over-long names are refused rather than silently altered, so what the user
    sees is what they sent. Path separators are harmless here (keys never contain names)."""
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
        if char in _BIDI_CONTROLS or unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"}:
            raise InvalidArgument(
                f"name contains the forbidden character U+{ord(char):04X}", reason="INVALID_NAME"
            )
    return normalized


def check_size(size: int, *, maximum: int) -> None:
    if size <= 0:
        raise InvalidArgument("size must be a positive number of bytes", reason="INVALID_SIZE")
    if size > maximum:
        raise ResourceExhausted(
            f"size {size} exceeds the limit of {maximum} bytes",
            reason="FILE_TOO_LARGE",
            metadata={"max_bytes": str(maximum)},
        )


def check_content_type(content_type: str, *, allowed: tuple[str, ...]) -> str:
    normalized = content_type.strip().lower()
    if not _CONTENT_TYPE.match(normalized):
        raise InvalidArgument("content_type must be type/subtype", reason="INVALID_CONTENT_TYPE")
    if allowed and not any(
        normalized == rule or (rule.endswith("/*") and normalized.startswith(rule[:-1])) for rule in allowed
    ):
        raise InvalidArgument(f"content type {normalized} is not allowed", reason="CONTENT_TYPE_NOT_ALLOWED")
    return normalized


def check_sha256(sha256: str) -> str:
    if sha256 and not _SHA256.match(sha256):
        raise InvalidArgument("sha256 must be 64 lower-case hex characters", reason="INVALID_SHA256")
    return sha256
