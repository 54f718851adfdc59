"""``missing_replica``: a READY replica (a copy of a file's original in another store) whose object
that store does not hold. Repair: copy it again from the file's own store (server-side when both
stores share an endpoint, else streamed in bounded memory: :meth:`ObjectStore.copy_from`); when the
original is not there either, the replica is marked MISSING (the missing-object check reports the
file itself). Only replicas of READY files are checked; a store this run does not configure is
skipped.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select

from filestore.metadata.db import store
from filestore.metadata.db.models import File, FileStatus, Replica, ReplicaState
from filestore.metadata.fsck.report import Finding, FindingKind, Repair, Resolution
from filestore.metadata.fsck.scan import RowsQuery, Scan
from filestore.server.storage import ObjectStore, StorageRefused

__all__ = ["check_replicas_have_objects"]


async def check_replicas_have_objects(scan: Scan) -> None:
    def page(after: str) -> RowsQuery:
        return (
            select(
                Replica.id, Replica.file_id, Replica.store, Replica.storage_key, File.store.label("origin")
            )
            .join(File, File.id == Replica.file_id)
            .where(
                Replica.state == ReplicaState.READY,
                File.status == FileStatus.READY,
                Replica.id > after,
                *scan.tenant_is(File.tenant),
            )
            .order_by(Replica.id)
        )

    async for rows in scan.pages(page):
        scan.report.scanned["replicas"] += len(rows)
        found: list[Finding] = []
        for name in {row.store for row in rows}:
            group = [row for row in rows if row.store == name]
            missing = await scan.missing([row.storage_key for row in group], store=name)
            found.extend(_finding(scan, row) for row in group if row.storage_key in missing)
        await scan.settle(found)


def _finding(scan: Scan, row: Row[Any]) -> Finding:
    return Finding(
        kind=FindingKind.MISSING_REPLICA,
        subject=row.storage_key,
        action=f"copy it again from store {row.origin!r}",
        detail={"record": "replica", "file_id": row.file_id, "store": row.store},
        _repair=_replica_repair(scan, row),
    )


def _replica_repair(scan: Scan, row: Row[Any]) -> Repair:
    async def repair() -> tuple[Resolution, str]:
        target, source = scan.store(row.store), scan.store(row.origin)
        if target is None or await target.head(row.storage_key) is not None:
            return Resolution.RESOLVED, "object present"
        if isinstance(source, ObjectStore) and await source.head(row.storage_key) is not None:
            try:
                await target.copy_from(source, row.storage_key)
            except StorageRefused as error:
                return Resolution.SKIPPED, f"storage refused the copy: {error.message}"
            return Resolution.REPAIRED, f"copied again from store {row.origin!r}"
        async with scan.sessions() as session, session.begin():
            marked = await store.mark_replica_missing(session, replica_id=row.id)
        return (
            (Resolution.REPAIRED, "replica marked MISSING")
            if marked
            else (Resolution.RESOLVED, "row changed")
        )

    return repair
