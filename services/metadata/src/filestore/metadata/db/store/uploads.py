"""Upload sessions: recorded OPEN with the file they fill and the quota they reserve, then closed
exactly once as COMPLETED (quota settled, file UPLOADED), ABORTED or EXPIRED (reservation released,
PENDING file DELETED); expired ones are leased to one reaper at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.errors import (
    InvalidArgument,
    file_not_found,
    upload_ended,
    upload_not_found,
)
from filestore.core.keys import KeyKind, original_key, parse_key
from filestore.core.reasons import Reason
from filestore.metadata.db.models import (
    File,
    FileColumns,
    FileStatus,
    PartChecksum,
    Upload,
    UploadColumns,
    UploadKind,
    UploadState,
    UploadValues,
    new_id,
    utcnow,
)
from filestore.metadata.db.store._sql import (
    Executor,
    KeysetCursor,
    _check_non_negative,
    _dialect,
    _load_file,
    _table,
    _values_of,
)
from filestore.metadata.db.store.files import transition_file
from filestore.metadata.db.store.quotas import release_quota, settle_quota

__all__ = [
    "UploadOutcome",
    "attached_storage_uploads",
    "claim_expired_uploads",
    "complete_upload",
    "end_upload",
    "get_upload",
    "list_uploads",
    "record_upload",
    "set_upload_state",
]


_UPLOADS = _table(Upload)
_INSERT_UPLOAD = insert(_UPLOADS)


async def record_upload(
    db: Executor,
    *,
    file: FileColumns,
    kind: UploadKind,
    part_size: int,
    part_count: int,
    expires_at: datetime,
    reserved_bytes: int = 0,
    storage_upload_id: str | None = None,
    part_checksum: PartChecksum = PartChecksum.NONE,
) -> UploadValues:
    """A new OPEN upload session filling ``file`` (as the caller read or created it in this
    transaction; a row is only ever deleted logically, so it cannot be stale). Answers the values
    written (one INSERT, nothing read back)."""
    _check_non_negative(part_size, "part_size")
    _check_non_negative(part_count, "part_count")
    _check_non_negative(reserved_bytes, "reserved_bytes")
    if file.status == FileStatus.DELETED:
        raise file_not_found(file.id)
    now = utcnow()
    upload = UploadValues(
        id=new_id(),
        file_id=file.id,
        tenant=file.tenant,
        kind=kind,
        storage_upload_id=storage_upload_id,
        part_size=part_size,
        part_count=part_count,
        part_checksum=part_checksum,
        state=UploadState.OPEN,
        expires_at=expires_at,
        reserved_bytes=reserved_bytes,
        created_at=now,
        updated_at=now,
        reaper_lock_until=None,
    )
    await db.execute(_INSERT_UPLOAD, _values_of(upload))
    return upload


_UPLOAD_BY_ID = select(_UPLOADS).where(_UPLOADS.c.id == bindparam("upload_id"))
_UPLOAD_BY_TENANT_AND_ID = _UPLOAD_BY_ID.where(_UPLOADS.c.tenant == bindparam("tenant"))


async def get_upload(db: Executor, *, tenant: str | None, upload_id: str) -> Row[Any]:
    """The upload as a Row of its columns."""
    upload = (
        await db.execute(
            _UPLOAD_BY_ID if tenant is None else _UPLOAD_BY_TENANT_AND_ID,
            {"upload_id": upload_id, "tenant": tenant},
        )
    ).first()
    if upload is None:
        raise upload_not_found(upload_id)
    return upload


@dataclass(frozen=True, slots=True)
class OpenUploadPage:
    #: Each OPEN, unexpired upload with its file.
    uploads: list[tuple[Upload, File]]
    next_cursor: KeysetCursor | None


#: The most uploads ListUploadRecords answers in one page.
MAX_UPLOAD_PAGE_SIZE = 100


async def list_open_uploads(
    session: AsyncSession,
    *,
    tenant: str,
    owner: str,
    file_id: str = "",
    page_size: int,
    after: KeysetCursor | None = None,
) -> OpenUploadPage:
    """One page of ``owner``'s OPEN uploads that have not expired (with their files), newest first
    (``created_at``, then ``id``), keyset-paginated like :func:`.files.list_files`."""
    if not 1 <= page_size <= MAX_UPLOAD_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be between 1 and {MAX_UPLOAD_PAGE_SIZE}",
            reason=Reason.INVALID_PAGE_SIZE,
            metadata={"max_page_size": str(MAX_UPLOAD_PAGE_SIZE)},
        )
    stmt = (
        select(Upload, File)
        .join(File, File.id == Upload.file_id)
        .where(
            Upload.tenant == tenant,
            File.tenant == tenant,
            File.owner == owner,
            Upload.state == UploadState.OPEN,
            Upload.expires_at > utcnow(),
        )
    )
    if file_id:
        stmt = stmt.where(Upload.file_id == file_id)
    if after is not None:
        stmt = stmt.where(tuple_(Upload.created_at, Upload.id) < (after.created_at, after.id))
    stmt = stmt.order_by(Upload.created_at.desc(), Upload.id.desc()).limit(page_size + 1)
    rows = [(upload, file) for upload, file in (await session.execute(stmt)).all()]
    next_cursor = None
    if len(rows) > page_size:
        rows = rows[:page_size]
        last = rows[-1][0]
        next_cursor = KeysetCursor(created_at=last.created_at, id=last.id)
    return OpenUploadPage(uploads=rows, next_cursor=next_cursor)


async def list_uploads(session: AsyncSession, *, tenant: str | None, file_id: str) -> list[Upload]:
    """The uploads of a file, oldest first."""
    stmt = select(Upload).where(Upload.file_id == file_id)
    if tenant is not None:
        stmt = stmt.where(Upload.tenant == tenant)
    return list((await session.scalars(stmt.order_by(Upload.created_at, Upload.id))).all())


async def _close_upload(
    session: AsyncSession, *, tenant: str | None, upload_id: str, to_state: UploadState
) -> tuple[UploadColumns, bool]:
    if to_state == UploadState.OPEN:
        raise InvalidArgument("an upload cannot be reopened", reason=Reason.ILLEGAL_TRANSITION)
    stmt = update(Upload).where(Upload.id == upload_id, Upload.state == UploadState.OPEN)
    if tenant is not None:
        stmt = stmt.where(Upload.tenant == tenant)
    closed = (
        await session.scalars(
            stmt.values(state=to_state, updated_at=utcnow(), reaper_lock_until=None)
            .returning(Upload)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if closed is not None:
        return closed, True
    upload = await get_upload(session, tenant=tenant, upload_id=upload_id)
    if upload.state == to_state:
        return upload, False
    raise upload_ended(upload_id, str(upload.state))


async def set_upload_state(
    session: AsyncSession, *, tenant: str | None, upload_id: str, to_state: UploadState
) -> UploadColumns:
    """Close an OPEN upload as COMPLETED, ABORTED or EXPIRED; quota and file are not touched.

    Re-applying the current state is a no-op (a retried CompleteUpload, a second reaper pass); closing
    an upload that was closed differently raises ``FailedPrecondition`` with reason
    ``UPLOAD_COMPLETED``, ``UPLOAD_ABORTED`` or ``UPLOAD_EXPIRED``, so exactly one of a racing
    complete and abort wins. Because the no-op is silent, callers that settle or release quota
    afterwards should use :func:`complete_upload` / :func:`end_upload`, which do it exactly once.
    """
    upload, _ = await _close_upload(session, tenant=tenant, upload_id=upload_id, to_state=to_state)
    return upload


async def attached_storage_uploads(
    session: AsyncSession, uploads: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (object key, storage upload id) pairs an OPEN upload record holds.

    A multipart upload's key is its file's original key, so the file id the key names finds the
    candidates by index; the key rebuilt from each candidate must then match exactly.
    """
    asked = set(uploads)
    parsed = (parse_key(key) for key, _ in asked)
    file_ids = sorted({key.file_id for key in parsed if key is not None and key.kind is KeyKind.ORIGINAL})
    if not file_ids:
        return set()
    rows = await session.execute(
        select(Upload.tenant, Upload.file_id, Upload.storage_upload_id).where(
            Upload.file_id.in_(file_ids),
            Upload.state == UploadState.OPEN,
            Upload.storage_upload_id.is_not(None),
        )
    )
    held = {(original_key(tenant, file_id), storage_id) for tenant, file_id, storage_id in rows}
    return asked & held


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    upload: UploadColumns
    file: FileColumns
    #: False when the upload was already in the requested state (a retry or a racing duplicate):
    #: nothing was changed, in particular no quota was settled or released a second time.
    changed: bool


async def complete_upload(
    session: AsyncSession, *, tenant: str | None, upload_id: str, actual_size: int
) -> UploadOutcome:
    """Finish an upload in one step: upload COMPLETED, reservation settled to ``actual_size`` in the
    owner's and tenant's quota, file UPLOADED. Exactly once, even when the client's CompleteUpload
    and the storage event race; a completed upload is answered unchanged.

    Raises ``FailedPrecondition`` (``UPLOAD_ABORTED`` / ``UPLOAD_EXPIRED``) for an ended upload. The
    caller has checked ``actual_size`` against what was declared before calling.
    """
    _check_non_negative(actual_size, "actual_size")
    upload, changed = await _close_upload(
        session, tenant=tenant, upload_id=upload_id, to_state=UploadState.COMPLETED
    )
    file = await _load_file(session, tenant=upload.tenant, file_id=upload.file_id, include_deleted=True)
    if changed:
        await settle_quota(
            session,
            tenant=upload.tenant,
            owner=file.owner,
            reserved=upload.reserved_bytes,
            actual=actual_size,
        )
        if file.status == FileStatus.PENDING:
            file = await transition_file(
                session, tenant=upload.tenant, file_id=file.id, to_status=FileStatus.UPLOADED
            )
    return UploadOutcome(upload=upload, file=file, changed=changed)


async def end_upload(
    session: AsyncSession, *, tenant: str | None, upload_id: str, to_state: UploadState
) -> UploadOutcome:
    """End an OPEN upload as ABORTED or EXPIRED: reservation released, PENDING file DELETED.

    Ending it again with the same state is a no-op; ending a completed upload raises
    ``FailedPrecondition(reason=Reason.UPLOAD_COMPLETED)``.
    """
    if to_state not in (UploadState.ABORTED, UploadState.EXPIRED):
        raise InvalidArgument("an upload ends as ABORTED or EXPIRED", reason=Reason.INVALID_UPLOAD_STATE)
    upload, changed = await _close_upload(session, tenant=tenant, upload_id=upload_id, to_state=to_state)
    file = await _load_file(session, tenant=upload.tenant, file_id=upload.file_id, include_deleted=True)
    if changed:
        await release_quota(session, tenant=upload.tenant, owner=file.owner, reserved=upload.reserved_bytes)
        if file.status == FileStatus.PENDING:
            file = await transition_file(
                session,
                tenant=upload.tenant,
                file_id=file.id,
                to_status=FileStatus.DELETED,
                reason=f"UPLOAD_{to_state}",
            )
    return UploadOutcome(upload=upload, file=file, changed=changed)


async def claim_expired_uploads(
    session: AsyncSession, *, lease: timedelta, limit: int = 100, now: datetime | None = None
) -> list[Upload]:
    """Lease up to ``limit`` OPEN uploads whose ``expires_at`` has passed, for this reaper only.

    Several brokers may reap at once: an upload is handed out only if nobody holds an unexpired
    lease on it, and the conditional UPDATE re-checks that under the row lock, so two reapers never
    get the same upload in the same lease period. A reaper that dies simply lets its lease lapse.
    The reaper then aborts the storage upload, releases the reservation and calls
    :func:`set_upload_state` (EXPIRED), which also clears the lease.
    """
    now = now or utcnow()
    claimable = and_(
        Upload.state == UploadState.OPEN,
        Upload.expires_at < now,
        or_(Upload.reaper_lock_until.is_(None), Upload.reaper_lock_until < now),
    )
    candidates = select(Upload.id).where(claimable).order_by(Upload.expires_at).limit(limit)
    if _dialect(session) == "postgresql":
        # Skip rows another reaper is claiming right now instead of queueing behind its lock.
        candidates = candidates.with_for_update(skip_locked=True)
    stmt = (
        update(Upload)
        .where(Upload.id.in_(candidates.scalar_subquery()), claimable)
        .values(reaper_lock_until=now + lease)
        .returning(Upload)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return list((await session.scalars(stmt)).all())
