"""What the reconciler found and what it did about it: findings, their resolutions, the report and its
two renderings (text for people, JSON for scripts), and the exit status the report implies."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from sqlalchemy.exc import SQLAlchemyError

from filestore.core.errors import Unavailable

__all__ = ["PROGRAM", "Finding", "FindingKind", "FsckReport", "Repair", "Resolution"]

PROGRAM: Final = "filestore-fsck"


class FindingKind(enum.StrEnum):
    ORPHAN_OBJECT = "orphan_object"
    ORPHAN_DERIVATIVE = "orphan_derivative"
    MISSING_OBJECT = "missing_object"
    STALE_MULTIPART_UPLOAD = "stale_multipart_upload"
    REFCOUNT_DRIFT = "refcount_drift"
    MISSING_REPLICA = "missing_replica"


class Resolution(enum.StrEnum):
    #: Dry run: reported, nothing changed.
    FOUND = "found"
    REPAIRED = "repaired"
    #: The re-check right before repairing found that it no longer holds; nothing was changed.
    RESOLVED = "resolved"
    #: Changed since the scan (an object rewritten); left for the next run.
    SKIPPED = "skipped"
    #: The repair was attempted and failed (the note says why).
    FAILED = "failed"


#: Re-checks one finding and repairs it if it still holds; answers the resolution and a note.
Repair: TypeAlias = Callable[[], Awaitable[tuple[Resolution, str]]]


@dataclass(slots=True, kw_only=True)
class Finding:
    kind: FindingKind
    #: The storage key concerned, or ``blob:<id>`` for a blob row.
    subject: str
    #: What ``--repair`` does (dry run) or did.
    action: str
    detail: dict[str, str] = field(default_factory=dict)
    resolution: Resolution = Resolution.FOUND
    note: str = ""
    _repair: Repair | None = field(default=None, repr=False, compare=False)

    async def repair(self) -> Resolution:
        """Re-check this finding and repair it if it still holds; sets ``resolution`` and ``note``."""
        if self._repair is None:
            return self.resolution
        try:
            self.resolution, self.note = await self._repair()
        except (Unavailable, SQLAlchemyError, OSError) as error:
            self.resolution, self.note = Resolution.FAILED, f"{type(error).__name__}: {error}"
        return self.resolution

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "subject": self.subject,
            "action": self.action,
            "detail": dict(self.detail),
            "resolution": str(self.resolution),
            "note": self.note,
        }


@dataclass(slots=True, kw_only=True)
class FsckReport:
    repair: bool
    grace_s: float
    #: Empty: every tenant.
    tenants: tuple[str, ...]
    findings: list[Finding] = field(default_factory=list)
    #: How many of each thing were looked at.
    scanned: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("objects", "files", "blobs", "derivatives", "multipart_uploads", "replicas"), 0
        )
    )
    #: Objects and multipart uploads left alone because they are younger than the grace period.
    young_skipped: int = 0

    @property
    def unresolved(self) -> list[Finding]:
        return [f for f in self.findings if f.resolution not in (Resolution.REPAIRED, Resolution.RESOLVED)]

    @property
    def clean(self) -> bool:
        return not self.unresolved

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1

    def counts(self) -> dict[str, int]:
        return {str(kind): sum(1 for f in self.findings if f.kind == kind) for kind in FindingKind}

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "repair": self.repair,
            "grace_s": self.grace_s,
            "tenants": list(self.tenants),
            "scanned": dict(self.scanned),
            "young_skipped": self.young_skipped,
            "counts": self.counts(),
            "findings": [finding.to_json() for finding in self.findings],
        }

    def render_text(self) -> str:
        mode = "repair" if self.repair else "dry run"
        scope = ", ".join(self.tenants) if self.tenants else "all tenants"
        scanned = ", ".join(f"{count} {name}" for name, count in self.scanned.items())
        lines = [
            f"{PROGRAM}: {mode}, {scope}, grace {self.grace_s:g}s",
            f"scanned: {scanned}; {self.young_skipped} younger than the grace period left alone",
        ]
        for finding in self.findings:
            detail = " ".join(f"{key}={value}" for key, value in finding.detail.items())
            note = f" ({finding.note})" if finding.note else ""
            lines.append(
                f"  {finding.resolution:<9} {finding.kind:<23} {finding.subject}  {detail}"
                f"  -> {finding.action}{note}"
            )
        if not self.findings:
            lines.append("no findings: the catalogue and storage agree")
        else:
            summary = ", ".join(f"{n} {kind}" for kind, n in self.counts().items() if n)
            left = len(self.unresolved)
            lines.append(f"{len(self.findings)} findings ({summary}); {left} unresolved")
            if not self.repair:
                lines.append("run with --repair to fix them")
        return "\n".join(lines)
