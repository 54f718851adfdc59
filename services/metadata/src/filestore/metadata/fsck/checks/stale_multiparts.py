"""``stale_multipart_upload``: a multipart upload open in storage that no OPEN upload record owns (no
record, or one already completed, aborted or expired). Repair: abort it, which frees its parts. OPEN
records, even expired ones, belong to the broker's reaper, which also releases their quota.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

from sqlalchemy import select

from filestore.core.keys import KeyKind, StorageKey, parse_key
from filestore.metadata.db.models import Upload, UploadState
from filestore.metadata.fsck.report import Finding, FindingKind, Repair, Resolution
from filestore.metadata.fsck.scan import Scan
from filestore.server.storage import OpenUpload

__all__ = ["check_multipart_uploads", "is_stale_multipart"]

#: (storage upload id, state) of each upload record of one file.
_UploadRecords: TypeAlias = list[tuple[str | None, UploadState]]


def is_stale_multipart(upload_id: str, records: Iterable[tuple[str | None, UploadState]]) -> bool:
    """Whether storage's multipart upload ``upload_id`` lacks an OPEN record owning it.

    ``records`` are (storage upload id, state) of the upload records of the file its key names.
    """
    return not any(storage_id == upload_id and state == UploadState.OPEN for storage_id, state in records)


async def check_multipart_uploads(scan: Scan) -> None:
    for prefix in scan.prefixes(KeyKind.ORIGINAL):
        async for page in scan.storage.list_multipart_uploads(prefix, page_size=scan.options.page_size):
            await _check_page(scan, page)


async def _upload_records(scan: Scan, file_ids: set[str]) -> dict[str, _UploadRecords]:
    if not file_ids:
        return {}
    stmt = select(Upload.file_id, Upload.storage_upload_id, Upload.state).where(
        Upload.file_id.in_(sorted(file_ids))
    )
    async with scan.sessions() as session, session.begin():
        rows = (await session.execute(stmt)).all()
    records: dict[str, _UploadRecords] = {}
    for row in rows:
        records.setdefault(row.file_id, []).append((row.storage_upload_id, row.state))
    return records


async def _check_page(scan: Scan, page: list[OpenUpload]) -> None:
    scan.report.scanned["multipart_uploads"] += len(page)
    settled = scan.leave_young(page, lambda upload: upload.initiated)
    owners = {upload.key: parse_key(upload.key) for upload in settled}
    records = await _upload_records(scan, {o.file_id for o in owners.values() if o is not None})
    findings: list[Finding] = []
    for upload in settled:
        owner = owners[upload.key]
        own_records = records.get(owner.file_id, []) if owner is not None else []
        if not is_stale_multipart(upload.upload_id, own_records):
            continue
        states = [str(state) for storage_id, state in own_records if storage_id == upload.upload_id]
        findings.append(
            Finding(
                kind=FindingKind.STALE_MULTIPART_UPLOAD,
                subject=upload.key,
                action="abort the multipart upload",
                detail={
                    "upload_id": upload.upload_id,
                    "initiated": upload.initiated.isoformat(),
                    "record": states[0] if states else "none",
                },
                _repair=_stale_multipart_repair(scan, upload, owner),
            )
        )
    await scan.settle(findings)


def _stale_multipart_repair(scan: Scan, upload: OpenUpload, owner: StorageKey | None) -> Repair:
    async def repair() -> tuple[Resolution, str]:
        if owner is not None:
            records = await _upload_records(scan, {owner.file_id})
            if not is_stale_multipart(upload.upload_id, records.get(owner.file_id, [])):
                return Resolution.RESOLVED, "an OPEN upload record owns it now"
        if await scan.storage.abort_multipart(upload.key, upload.upload_id):
            return Resolution.REPAIRED, "aborted"
        return Resolution.RESOLVED, "storage no longer has it"

    return repair
