"""How a multipart upload is cut into parts: S3's rules, and the sizes every part must have."""

from __future__ import annotations

from dataclasses import dataclass

from filestore.core.errors import InvalidArgument
from filestore.core.reasons import Reason

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "PartPlan",
    "plan_parts",
]

MIB = 1024**2
#: S3: every part but the last is at least 5 MiB and at most 5 GiB; at most 10,000 parts.
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000
#: Big enough that per-part overhead (one request, one URL) is small, small enough that a
#: retried part on a poor connection costs little.
DEFAULT_PART_SIZE = 16 * MIB


@dataclass(frozen=True, slots=True)
class PartPlan:
    """Equal parts of ``part_size`` bytes; the last holds the remainder."""

    size: int
    part_size: int
    part_count: int

    def part_length(self, part_number: int) -> int:
        """The exact size part ``part_number`` (1-based) must have."""
        if not 1 <= part_number <= self.part_count:
            raise InvalidArgument(
                f"part numbers run from 1 to {self.part_count}",
                reason=Reason.INVALID_PART_NUMBER,
                metadata={"part_number": str(part_number), "part_count": str(self.part_count)},
            )
        if part_number < self.part_count:
            return self.part_size
        return self.size - self.part_size * (self.part_count - 1)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def plan_parts(size: int, *, requested_part_size: int = 0) -> PartPlan:
    """The plan for ``size`` bytes. A requested part size outside 5 MiB..5 GiB is refused; one
    within is honoured, raised (to a whole MiB) only as far as needed to fit in 10,000 parts."""
    if requested_part_size and not MIN_PART_SIZE <= requested_part_size <= MAX_PART_SIZE:
        raise InvalidArgument(
            f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes",
            reason=Reason.INVALID_PART_SIZE,
            metadata={"min_bytes": str(MIN_PART_SIZE), "max_bytes": str(MAX_PART_SIZE)},
        )
    smallest_fitting = _ceil_div(_ceil_div(size, MAX_PARTS), MIB) * MIB
    part_size = max(requested_part_size or DEFAULT_PART_SIZE, smallest_fitting, MIN_PART_SIZE)
    if part_size > MAX_PART_SIZE:
        raise InvalidArgument(
            f"{size} bytes do not fit in {MAX_PARTS} parts of at most {MAX_PART_SIZE} bytes",
            reason=Reason.INVALID_SIZE,
        )
    return PartPlan(size=size, part_size=part_size, part_count=max(1, _ceil_div(size, part_size)))
