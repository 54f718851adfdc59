"""The broker's checks on what clients declare, on top of the shared ones in
:mod:`filestore.core.validation`. A refused value raises a typed error with a precise reason and
never reaches storage; names are metadata only and never part of a key."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from filestore.core import validation as shared
from filestore.core.errors import InvalidArgument, ResourceExhausted
from filestore.core.reasons import Reason
from filestore.server.sigv4 import ChecksumName, PartChecksum

__all__ = [
    "check_content_type",
    "check_multipart_size",
    "check_sha256",
    "check_size",
    "clean_name",
    "part_checksum",
    "part_checksums",
]

clean_name = shared.clean_name
check_sha256 = shared.check_sha256


def check_size(size: int, *, maximum: int) -> None:
    """0 bytes is a size like any other: an empty file is a legal file (placeholders, `.keep`, empty
    logs). Only MULTIPART refuses it (see ``check_multipart_size``)."""
    if size < 0:
        raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)
    if size > maximum:
        raise ResourceExhausted(
            f"size {size} exceeds the limit of {maximum} bytes",
            reason=Reason.FILE_TOO_LARGE,
            metadata={"max_bytes": str(maximum)},
        )


def check_multipart_size(size: int) -> None:
    """Storage completes a multipart upload only from at least one part, and a part of 0 bytes is no
    content: an empty file goes in one request."""
    if size == 0:
        raise InvalidArgument(
            "a MULTIPART upload cannot be empty; send 0 bytes as SINGLE or POST_POLICY "
            "(an unspecified kind without part_size chooses SINGLE)",
            reason=Reason.INVALID_SIZE,
        )


def check_content_type(content_type: str, *, allowed: tuple[tuple[str, ...], ...]) -> str:
    """The normalized type; each list in ``allowed`` (service-wide, the tenant's) must admit it."""
    normalized = shared.check_content_type(content_type)
    for rules in allowed:
        shared.check_content_type(normalized, allowed=rules)
    return normalized


def part_checksums(
    numbers: Collection[int],
    sha256: Mapping[int, str],
    crc32: Mapping[int, str],
    *,
    algorithm: ChecksumName | None,
) -> dict[int, PartChecksum]:
    """The checksum to sign into each part's URL, from SignParts' ``part_sha256`` and ``part_crc32``:
    every part signed carries one, of the ``algorithm`` the upload was created with; an upload
    created without one takes none (S3 refuses a part checksum the upload was not created for)."""
    given: dict[ChecksumName, Mapping[int, str]] = {"sha256": sha256, "crc32": crc32}
    for other, digests in given.items():
        if other != algorithm and digests:
            expected = f"{algorithm.upper()} part checksums" if algorithm else "no part checksums"
            raise InvalidArgument(
                f"this upload was created for {expected}; part_{other} cannot be used",
                reason=Reason.CHECKSUM_ALGORITHM_MISMATCH,
                metadata={"expected": algorithm or "none"},
            )
    if algorithm is None:
        return {}
    digests = given[algorithm]
    for number in digests:
        if number not in numbers:
            raise InvalidArgument(
                f"part_{algorithm} names part {number}, which is not in part_numbers",
                reason=Reason.INVALID_PART_NUMBER,
                metadata={"part_number": str(number)},
            )
    checksums: dict[int, PartChecksum] = {}
    for number in numbers:
        if number not in digests:
            raise InvalidArgument(
                f"part {number} needs its {algorithm.upper()}: the upload was created for them",
                reason=Reason.PART_CHECKSUM_REQUIRED,
                metadata={"part_number": str(number)},
            )
        checksums[number] = part_checksum(algorithm, number, digests[number])
    return checksums


def part_checksum(algorithm: ChecksumName, part_number: int, digest: str) -> PartChecksum:
    """One part's checksum, checked for shape (8 or 64 lower-case hex digits)."""
    try:
        valid = shared.check_crc32(digest) if algorithm == "crc32" else _declared_sha256(digest)
    except InvalidArgument as error:
        error.metadata["part_number"] = str(part_number)
        raise
    return PartChecksum(algorithm, valid)


def _declared_sha256(sha256: str) -> str:
    """A SHA-256 that must be there (``check_sha256`` takes empty as "not declared")."""
    if not sha256:
        raise InvalidArgument("sha256 must be 64 lower-case hex characters", reason=Reason.INVALID_SHA256)
    return shared.check_sha256(sha256)
