"""``orphan_object`` and ``orphan_derivative`` objects: an object under ``originals/`` or
``derivatives/`` that no record needs (no live file, no blob and no derivative row has its key); it is
an ``orphan_derivative`` when it is a derivative whose file is gone. An expired file's objects are
kept until its lifecycle PURGE (``db.store.lifecycle.keys_awaiting_purge``). Repair: delete the object, after
the exhaustive check over every record and only if it did not change since it was listed. Keys are
built from fresh ids, so once no record needs a key, none can need it later.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from filestore.core.keys import KeyKind, parse_key
from filestore.metadata.db.models import Blob, Derivative, File, FileStatus
from filestore.metadata.db.store import lifecycle
from filestore.metadata.fsck.report import Finding, FindingKind, Repair, Resolution
from filestore.metadata.fsck.scan import Scan
from filestore.server.storage import ListedObject

__all__ = ["check_objects_have_records"]


@dataclass(frozen=True, slots=True)
class _FileFacts:
    status: FileStatus
    storage_key: str
    blob_key: str | None


async def check_objects_have_records(scan: Scan) -> None:
    for kind in KeyKind:
        for prefix in scan.prefixes(kind):
            async for page in scan.storage.list_objects(prefix, page_size=scan.options.page_size):
                await _check_page(scan, page)


async def _check_page(scan: Scan, page: list[ListedObject]) -> None:
    scan.report.scanned["objects"] += len(page)
    settled = scan.leave_young(page, lambda stored: stored.last_modified)
    owners = {stored.key: parse_key(stored.key) for stored in settled}
    files = await _file_facts(scan, {owner.file_id for owner in owners.values() if owner is not None})
    # The cheap pass: keys are built from ids, so the rows of the file each key names (found by
    # primary key) account for nearly every object. Only the rest get the exhaustive check.
    referenced = {facts.storage_key for facts in files.values() if facts.status != FileStatus.DELETED}
    referenced |= {facts.blob_key for facts in files.values() if facts.blob_key is not None}
    referenced |= await _derivative_keys(scan, set(files))
    # An expired file keeps its objects for the grace its rule gives; its PURGE deletes them.
    async with scan.sessions() as session, session.begin():
        referenced |= await lifecycle.keys_awaiting_purge(session, file_ids=sorted(files))
    candidates = [stored for stored in settled if stored.key not in referenced]
    referenced |= await scan.referenced_keys([stored.key for stored in candidates])
    findings: list[Finding] = []
    for stored in candidates:
        if stored.key in referenced:
            continue
        owner = owners[stored.key]
        parent = files.get(owner.file_id) if owner is not None else None
        parentless = (
            owner is not None
            and owner.derivative_kind is not None
            and (parent is None or parent.status == FileStatus.DELETED)
        )
        findings.append(
            Finding(
                kind=FindingKind.ORPHAN_DERIVATIVE if parentless else FindingKind.ORPHAN_OBJECT,
                subject=stored.key,
                action="delete the object",
                detail={
                    "size": str(stored.size),
                    "last_modified": stored.last_modified.isoformat(),
                    "file": "no row" if parent is None else str(parent.status),
                },
                _repair=_orphan_object_repair(scan, stored),
            )
        )
    await scan.settle(findings)


async def _file_facts(scan: Scan, file_ids: set[str]) -> dict[str, _FileFacts]:
    if not file_ids:
        return {}
    stmt = (
        select(File.id, File.status, File.storage_key, Blob.storage_key.label("blob_key"))
        .outerjoin(Blob, Blob.id == File.blob_id)
        .where(File.id.in_(sorted(file_ids)))
    )
    async with scan.sessions() as session, session.begin():
        rows = (await session.execute(stmt)).all()
    return {row.id: _FileFacts(row.status, row.storage_key, row.blob_key) for row in rows}


async def _derivative_keys(scan: Scan, file_ids: set[str]) -> set[str]:
    if not file_ids:
        return set()
    stmt = select(Derivative.storage_key).where(Derivative.file_id.in_(sorted(file_ids)))
    async with scan.sessions() as session, session.begin():
        return set((await session.scalars(stmt)).all())


def _orphan_object_repair(scan: Scan, stored: ListedObject) -> Repair:
    async def repair() -> tuple[Resolution, str]:
        return await scan.delete_object_if_unreferenced(stored.key, listed=stored)

    return repair
