"""``missing_object``: a record whose bytes are not in storage. Repairs, each through the store and only
if storage still lacks the object and the row still names it:

* a file that is UPLOADED, PROCESSING or READY becomes FAILED with ``status_reason`` ``OBJECT_MISSING``
  (:func:`filestore.metadata.db.store.fail_file_without_object`): the record stays, and nothing serves
  a URL to bytes that are not there;
* a blob row is forgotten (:func:`filestore.metadata.db.store.forget_blob_without_object`), so it stops
  being a dedup target;
* a derivative row of a live file is dropped
  (:func:`filestore.metadata.db.store.drop_derivative_without_object`).

PENDING files have no bytes yet; QUARANTINED and FAILED files are never served and their bytes may have
been removed on purpose, so neither is checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.reasons import Reason
from filestore.metadata.db import store
from filestore.metadata.db.models import Blob, Derivative, File, FileStatus
from filestore.metadata.fsck.report import Finding, FindingKind, Repair, Resolution
from filestore.metadata.fsck.scan import RowsQuery, Scan

__all__ = ["OBJECT_MISSING_REASON", "check_records_have_objects"]

#: ``status_reason`` of a file the reconciler found without its bytes.
OBJECT_MISSING_REASON: Final = Reason.OBJECT_MISSING.value

#: A store function that removes or sets aside the record, answering whether it did (the row was as found).
_RecordRepair = Callable[[AsyncSession], Awaitable[bool]]


async def check_records_have_objects(scan: Scan) -> None:
    """Each record is looked for in the store it names (a file's derivatives in the file's)."""
    await _check_files(scan)
    await _check_blobs(scan)
    await _check_derivatives(scan)


async def _check_rows(
    scan: Scan,
    page: Callable[[str], RowsQuery],
    finding: Callable[[Row[Any]], Finding],
    *,
    counted: str | None,
) -> None:
    """A finding for each row ``page`` selects whose ``storage_key`` its ``store`` has no object for;
    ``counted`` names the rows in the report's ``scanned`` (blobs are counted by their own check)."""
    async for rows in scan.pages(page):
        if counted is not None:
            scan.report.scanned[counted] += len(rows)
        missing: set[tuple[str, str]] = set()
        for name in {row.store for row in rows}:
            keys = [row.storage_key for row in rows if row.store == name]
            missing.update((name, key) for key in await scan.missing(keys, store=name))
        await scan.settle([finding(row) for row in rows if (row.store, row.storage_key) in missing])


def _record_repair(
    scan: Scan, store_name: str, key: str, change: _RecordRepair, *, unchanged: str, done: str
) -> Repair:
    """Re-check that the store still lacks ``key``, then ``change`` the record in a transaction of its own."""

    async def repair() -> tuple[Resolution, str]:
        storage = scan.store(store_name)
        if storage is None or await storage.head(key) is not None:
            return Resolution.RESOLVED, "object present"
        async with scan.sessions() as session, session.begin():
            changed = await change(session)
        return (Resolution.REPAIRED, done) if changed else (Resolution.RESOLVED, unchanged)

    return repair


async def _check_files(scan: Scan) -> None:
    def page(after: str) -> RowsQuery:
        return (
            select(File.id, File.tenant, File.status, File.storage_key, File.store)
            .where(
                File.status.in_(sorted(store.STATES_WITH_BYTES)),
                File.id > after,
                *scan.tenant_is(File.tenant),
            )
            .order_by(File.id)
        )

    def finding(row: Row[Any]) -> Finding:
        return Finding(
            kind=FindingKind.MISSING_OBJECT,
            subject=row.storage_key,
            action=f"mark the file FAILED ({OBJECT_MISSING_REASON})",
            detail={"record": "file", "file_id": row.id, "tenant": row.tenant, "status": row.status},
            _repair=_file_repair(scan, row.store, row.id, row.storage_key),
        )

    await _check_rows(scan, page, finding, counted="files")


def _file_repair(scan: Scan, store_name: str, file_id: str, key: str) -> Repair:
    async def fail(session: AsyncSession) -> bool:
        failed = await store.fail_file_without_object(
            session, file_id=file_id, storage_key=key, reason=OBJECT_MISSING_REASON
        )
        return failed is not None

    return _record_repair(
        scan,
        store_name,
        key,
        fail,
        unchanged="the file changed state meanwhile",
        done=f"file FAILED ({OBJECT_MISSING_REASON})",
    )


async def _check_blobs(scan: Scan) -> None:
    def page(after: str) -> RowsQuery:
        return (
            select(Blob.id, Blob.tenant, Blob.storage_key, Blob.store)
            .where(Blob.id > after, *scan.tenant_is(Blob.tenant))
            .order_by(Blob.id)
        )

    def finding(row: Row[Any]) -> Finding:
        return Finding(
            kind=FindingKind.MISSING_OBJECT,
            subject=row.storage_key,
            action="forget the blob (it must not stay a dedup target)",
            detail={"record": "blob", "blob_id": row.id, "tenant": row.tenant},
            _repair=_blob_repair(scan, row.store, row.id, row.storage_key),
        )

    await _check_rows(scan, page, finding, counted=None)


def _blob_repair(scan: Scan, store_name: str, blob_id: str, key: str) -> Repair:
    async def forget(session: AsyncSession) -> bool:
        return await store.forget_blob_without_object(session, blob_id=blob_id, storage_key=key)

    return _record_repair(scan, store_name, key, forget, unchanged="row gone", done="blobs row deleted")


async def _check_derivatives(scan: Scan) -> None:
    def page(after: str) -> RowsQuery:
        return (
            # A file's derivatives are written to its store.
            select(Derivative.id, Derivative.file_id, Derivative.kind, Derivative.storage_key, File.store)
            .join(File, File.id == Derivative.file_id)
            .where(File.status != FileStatus.DELETED, Derivative.id > after, *scan.tenant_is(File.tenant))
            .order_by(Derivative.id)
        )

    def finding(row: Row[Any]) -> Finding:
        return Finding(
            kind=FindingKind.MISSING_OBJECT,
            subject=row.storage_key,
            action="delete the derivative row",
            detail={"record": "derivative", "file_id": row.file_id, "kind": row.kind},
            _repair=_derivative_repair(scan, row.store, row.id, row.storage_key),
        )

    await _check_rows(scan, page, finding, counted="derivatives")


def _derivative_repair(scan: Scan, store_name: str, derivative_id: str, key: str) -> Repair:
    async def drop(session: AsyncSession) -> bool:
        return await store.drop_derivative_without_object(
            session, derivative_id=derivative_id, storage_key=key
        )

    return _record_repair(scan, store_name, key, drop, unchanged="row gone", done="derivatives row deleted")
