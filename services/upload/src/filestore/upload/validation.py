"""The broker's checks on what clients declare, on top of the shared ones in
:mod:`filestore.core.validation`. A refused value raises a typed error with a precise reason and
never reaches storage; names are metadata only and never part of a key."""

from __future__ import annotations

from filestore.core import validation as shared
from filestore.core.errors import InvalidArgument, ResourceExhausted

__all__ = ["check_content_type", "check_part_sha256", "check_sha256", "check_size", "clean_name"]

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


def check_part_sha256(part_number: int, sha256: str) -> str:
    if not sha256:
        raise InvalidArgument(
            f"part_sha256[{part_number}] must not be empty",
            reason="INVALID_SHA256",
            metadata={"part_number": str(part_number)},
        )
    try:
        return shared.check_sha256(sha256)
    except InvalidArgument as error:
        error.metadata["part_number"] = str(part_number)
        raise
