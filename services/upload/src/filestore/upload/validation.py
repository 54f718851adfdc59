"""The broker's checks on what clients declare, on top of the shared ones in
:mod:`filestore.core.validation`. A refused value raises a typed error with a precise reason and
never reaches storage; names are metadata only and never part of a key."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

from filestore.core import validation as shared
from filestore.core.errors import InvalidArgument, ResourceExhausted
from filestore.core.sigv4 import PartChecksum

__all__ = ["check_content_type", "check_sha256", "check_size", "clean_name", "part_checksums"]

clean_name = shared.clean_name
check_sha256 = shared.check_sha256


def check_size(size: int, *, maximum: int) -> None:
    if size <= 0:
        raise InvalidArgument("size must be a positive number of bytes", reason="INVALID_SIZE")
    if size > maximum:
        raise ResourceExhausted(
            f"size {size} exceeds the limit of {maximum} bytes",
            reason="FILE_TOO_LARGE",
            metadata={"max_bytes": str(maximum)},
        )


def check_content_type(content_type: str, *, allowed: tuple[tuple[str, ...], ...]) -> str:
    """The normalized type; each list in ``allowed`` (service-wide, the tenant's) must admit it."""
    normalized = shared.check_content_type(content_type)
    for rules in allowed:
        shared.check_content_type(normalized, allowed=rules)
    return normalized


def part_checksums(
    numbers: Collection[int], sha256: Mapping[int, str], crc32: Mapping[int, str]
) -> dict[int, PartChecksum]:
    """The checksum to sign into each part's URL, from SignParts' ``part_sha256`` and ``part_crc32``:
    only for parts being signed, well-formed, and at most one per part."""
    checksums: dict[int, PartChecksum] = {}
    given: tuple[tuple[Literal["sha256", "crc32"], Mapping[int, str]], ...] = (
        ("sha256", sha256),
        ("crc32", crc32),
    )
    for algorithm, digests in given:
        for number, digest in digests.items():
            where = {"part_number": str(number)}
            if number not in numbers:
                raise InvalidArgument(
                    f"part_{algorithm} names part {number}, which is not in part_numbers",
                    reason="INVALID_PART_NUMBER",
                    metadata=where,
                )
            if number in checksums:
                raise InvalidArgument(
                    f"part {number} has both a SHA-256 and a CRC32; give one",
                    reason="CONFLICTING_CHECKSUMS",
                    metadata=where,
                )
            try:
                valid = shared.check_crc32(digest) if algorithm == "crc32" else _declared_sha256(digest)
            except InvalidArgument as error:
                error.metadata.update(where)
                raise
            checksums[number] = PartChecksum(algorithm, valid)
    return checksums


def _declared_sha256(sha256: str) -> str:
    """A SHA-256 that must be there (``check_sha256`` takes empty as "not declared")."""
    if not sha256:
        raise InvalidArgument("sha256 must be 64 lower-case hex characters", reason="INVALID_SHA256")
    return shared.check_sha256(sha256)
