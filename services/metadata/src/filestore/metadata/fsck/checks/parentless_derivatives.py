"""``orphan_derivative`` rows: a derivative whose file is DELETED or has no row at all. Repair: forget
the row (:func:`filestore.metadata.db.store.drop_parentless_derivative`), then delete its object unless a
record has the key. Derivatives are regenerable.

(Objects under ``derivatives/`` whose file is gone, with no row, are found by
:mod:`.orphan_objects`.)
"""

from __future__ import annotations

from sqlalchemy import or_, select

from filestore.core.keys import KeyKind
from filestore.metadata.db import store
from filestore.metadata.db.models import Derivative, File, FileStatus
from filestore.metadata.fsck.report import Finding, FindingKind, Repair, Resolution
from filestore.metadata.fsck.scan import RowsQuery, Scan

__all__ = ["check_parentless_derivatives"]


async def check_parentless_derivatives(scan: Scan) -> None:
    def page(after: str) -> RowsQuery:
        return (
            select(Derivative.id, Derivative.file_id, Derivative.kind, Derivative.storage_key, File.status)
            .outerjoin(File, File.id == Derivative.file_id)
            .where(
                or_(File.id.is_(None), File.status == FileStatus.DELETED),
                Derivative.id > after,
                # A parentless derivative may have no file row to name its tenant: its key does.
                *scan.key_in_scope(Derivative.storage_key, KeyKind.DERIVATIVE),
            )
            .order_by(Derivative.id)
        )

    async for rows in scan.pages(page):
        findings = [
            Finding(
                kind=FindingKind.ORPHAN_DERIVATIVE,
                subject=row.storage_key,
                action="delete the derivative row and its object",
                detail={
                    "file_id": row.file_id,
                    "kind": row.kind,
                    "parent": "DELETED" if row.status is not None else "no row",
                },
                _repair=_parentless_derivative_repair(scan, row.id),
            )
            for row in rows
        ]
        await scan.settle(findings)


def _parentless_derivative_repair(scan: Scan, derivative_id: str) -> Repair:
    async def repair() -> tuple[Resolution, str]:
        async with scan.sessions() as session, session.begin():
            key = await store.drop_parentless_derivative(session, derivative_id=derivative_id)
        if key is None:
            return Resolution.RESOLVED, "row gone, or its parent is live"
        _, note = await scan.delete_object_if_unreferenced(key, listed=None)
        return Resolution.REPAIRED, f"row deleted; {note}"

    return repair
