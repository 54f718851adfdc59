"""The grammar of the identities that reach Filestore from outside: tenants, subjects and the path
segments of storage keys.

A tenant is part of every object key (``originals/{tenant}/{file_id}``), so a tenant must be one
harmless key segment: ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit,
at most 63 characters. It can never be ``.`` or ``..``, hold ``/``, NUL or whitespace, and every key
built from it stays far below S3's 1,024 bytes. A subject is never part of a key, but it is stored,
logged and compared: 1-255 characters, none of them a control, format or surrogate code point or a
line or paragraph separator. These rules are the contract of ``protos/filestore/v1/resources.proto``.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "ANY_TENANT",
    "KEY_SEGMENT_MAX_CHARS",
    "SUBJECT_GRAMMAR",
    "SUBJECT_MAX_CHARS",
    "TENANT_GRAMMAR",
    "TENANT_MAX_CHARS",
    "is_key_segment",
    "is_subject",
    "is_tenant",
]

TENANT_MAX_CHARS = 63
SUBJECT_MAX_CHARS = 255
KEY_SEGMENT_MAX_CHARS = 128
#: The tenant of service tokens: services act for whichever tenant a request names.
ANY_TENANT = "*"

#: The two grammars as error messages say them (a refused value is never echoed: it may be anything).
TENANT_GRAMMAR = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{TENANT_MAX_CHARS - 1}}}"
SUBJECT_GRAMMAR = f"1-{SUBJECT_MAX_CHARS} characters without control or format characters"

_TENANT = re.compile(TENANT_GRAMMAR)
_KEY_SEGMENT = re.compile(rf"[A-Za-z0-9._-]{{1,{KEY_SEGMENT_MAX_CHARS}}}")
#: Control, format (bidirectional overrides, zero-width characters), surrogate, and the line and
#: paragraph separators: characters that disguise a name in a log line or a listing.
_SUBJECT_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_tenant(value: str) -> bool:
    """Whether ``value`` is a tenant: ``[A-Za-z0-9][A-Za-z0-9._-]{0,62}``."""
    return _TENANT.fullmatch(value) is not None


def is_subject(value: str) -> bool:
    """Whether ``value`` is a subject: 1-255 characters, no control or format characters."""
    return 0 < len(value) <= SUBJECT_MAX_CHARS and not any(
        unicodedata.category(char) in _SUBJECT_FORBIDDEN_CATEGORIES for char in value
    )


def is_key_segment(value: str) -> bool:
    """Whether ``value`` can be one segment of an object key as it is: 1-128 characters of
    ``[A-Za-z0-9._-]`` and not ``.`` or ``..``, so it never adds, removes or climbs a level."""
    return _KEY_SEGMENT.fullmatch(value) is not None and value not in (".", "..")
