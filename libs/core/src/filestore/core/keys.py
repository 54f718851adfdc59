"""The layout of object keys: the one place that builds a key and the one that reads one back.

Keys are built from a tenant and ids only, never from what a client names a file:

* ``originals/{tenant}/{file_id}``: the bytes a file's upload writes (a deduplicated file reads
  another file's original instead: the catalogue's ``storage_key`` says where a file's bytes are);
* ``derivatives/{tenant}/{file_id}/{kind}``: what the processor makes of a file (a thumbnail, text).

Tenants and ids are checked at the edge (the token's claims, the request's fields); the builders check
them again against :mod:`filestore.core.identity`, as the last line, so that no path through the code
can build a key whose shape a value changed (``originals/x/y/<id>`` inside another tenant's prefix,
``originals/../<id>``). A refusal there is a bug: it raises ``ValueError``. Reading a key back never
raises: a key of another shape is simply not one of ours.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from filestore.core.identity import is_key_segment, is_tenant

__all__ = [
    "KeyKind",
    "StorageKey",
    "derivative_key",
    "key_prefix",
    "original_key",
    "parse_key",
]


class KeyKind(enum.StrEnum):
    """What a key holds; the value is the key's first segment."""

    ORIGINAL = "originals"
    DERIVATIVE = "derivatives"


@dataclass(frozen=True, slots=True)
class StorageKey:
    """A key of the layout, by its parts; ``str()`` of it is the key itself."""

    kind: KeyKind
    tenant: str
    file_id: str
    #: What a derivative is (``thumbnail_256``, ``text``); ``None`` for an original.
    derivative_kind: str | None = None

    def __post_init__(self) -> None:
        _check_tenant(self.tenant)
        _check_segment(self.file_id)
        if (self.kind is KeyKind.DERIVATIVE) != (self.derivative_kind is not None):
            raise ValueError(f"a {self.kind.name.lower()} key with derivative kind {self.derivative_kind!r}")
        if self.derivative_kind is not None:
            _check_segment(self.derivative_kind)

    @classmethod
    def original(cls, tenant: str, file_id: str) -> StorageKey:
        return cls(KeyKind.ORIGINAL, tenant, file_id)

    @classmethod
    def derivative(cls, tenant: str, file_id: str, kind: str) -> StorageKey:
        return cls(KeyKind.DERIVATIVE, tenant, file_id, kind)

    def __str__(self) -> str:
        key = f"{self.kind.value}/{self.tenant}/{self.file_id}"
        return key if self.derivative_kind is None else f"{key}/{self.derivative_kind}"


def original_key(tenant: str, file_id: str) -> str:
    """Where a file's uploaded bytes live: ``originals/{tenant}/{file_id}``."""
    return str(StorageKey.original(tenant, file_id))


def derivative_key(tenant: str, file_id: str, kind: str) -> str:
    """Where a file's derivative of ``kind`` lives: ``derivatives/{tenant}/{file_id}/{kind}``."""
    return str(StorageKey.derivative(tenant, file_id, kind))


def key_prefix(kind: KeyKind, tenant: str | None = None) -> str:
    """The prefix (with its trailing slash) of every key of ``kind``, or of ``tenant``'s only."""
    if tenant is None:
        return f"{kind.value}/"
    return f"{kind.value}/{_check_tenant(tenant)}/"


def parse_key(key: str) -> StorageKey | None:
    """The parts of ``key`` when the layout could have built it, else ``None``."""
    area, _, rest = key.partition("/")
    parts = rest.split("/")
    try:
        if area == KeyKind.ORIGINAL and len(parts) == 2:
            return StorageKey.original(parts[0], parts[1])
        if area == KeyKind.DERIVATIVE and len(parts) == 3:
            return StorageKey.derivative(parts[0], parts[1], parts[2])
    except ValueError:
        return None
    return None


def _check_tenant(tenant: str) -> str:
    if not is_tenant(tenant):
        raise ValueError(f"not a tenant, refused in a storage key: {tenant[:80]!r}")
    return tenant


def _check_segment(value: str) -> str:
    if not is_key_segment(value):
        raise ValueError(f"not a key segment, refused in a storage key: {value[:80]!r}")
    return value
