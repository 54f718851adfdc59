"""``refcount_drift``: a blob whose ``ref_count`` differs from the number of live files pointing at it,
or that no live file points at. Repair: recount under the row lock
(:func:`filestore.metadata.db.store.recount_blob_references`); a blob no live file points at is
forgotten and its object deleted unless a record has the key, as deleting its last file would have.
"""

from __future__ import annotations

from sqlalchemy import select

from filestore.metadata.db import store
from filestore.metadata.db.models import Blob
from filestore.metadata.fsck.report import Finding, FindingKind, Repair, Resolution
from filestore.metadata.fsck.scan import RowsQuery, Scan

__all__ = ["check_reference_counts"]


async def check_reference_counts(scan: Scan) -> None:
    def page(after: str) -> RowsQuery:
        live = store.live_reference_count(Blob.id).scalar_subquery().correlate(Blob).label("live")
        return (
            select(Blob.id, Blob.tenant, Blob.storage_key, Blob.ref_count, live)
            .where(Blob.id > after, *scan.tenant_is(Blob.tenant))
            .order_by(Blob.id)
        )

    async for rows in scan.pages(page):
        scan.report.scanned["blobs"] += len(rows)
        findings = [
            Finding(
                kind=FindingKind.REFCOUNT_DRIFT,
                subject=f"blob:{row.id}",
                action=(
                    f"set ref_count to {row.live}"
                    if row.live
                    else "forget the blob and delete its object unless a record has the key"
                ),
                detail={
                    "tenant": row.tenant,
                    "storage_key": row.storage_key,
                    "ref_count": str(row.ref_count),
                    "live_files": str(row.live),
                },
                _repair=_reference_count_repair(scan, row.id),
            )
            for row in rows
            if store.needs_refcount_repair(row.ref_count, row.live)
        ]
        await scan.settle(findings)


def _reference_count_repair(scan: Scan, blob_id: str) -> Repair:
    async def repair() -> tuple[Resolution, str]:
        async with scan.sessions() as session, session.begin():
            recount = await store.recount_blob_references(session, blob_id=blob_id)
        if recount is None:
            return Resolution.RESOLVED, "blob gone"
        if not recount.changed:
            return Resolution.RESOLVED, f"ref_count {recount.stored} is right"
        if not recount.forgotten:
            return Resolution.REPAIRED, f"ref_count {recount.stored} -> {recount.live}"
        _, note = await scan.delete_object_if_unreferenced(recount.storage_key, listed=None)
        return Resolution.REPAIRED, f"blob forgotten; {note}"

    return repair
