"""Files and their lifecycle: create, read, list (keyset pages), change, and the one place the lifecycle
is enforced (:func:`transition_file`), with what a move implies: a deletion refunds the settled quota and
drops the file's derivatives and blob reference, reprocessing clears the step results, and content that
changed after it was verified quarantines every file reading it (:func:`quarantine_content`).

The lifecycle depends on :mod:`.blobs` (a dedup copy takes a reference, a deletion drops it),
:mod:`.quotas` (a deletion refunds) and :mod:`.results` (what a move forgets); none of them imports this
module, and :mod:`.uploads` builds on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from filestore.core.errors import Aborted, FailedPrecondition, InvalidArgument
from filestore.core.keys import original_key
from filestore.core.reasons import Reason
from filestore.metadata.db.models import (
    DEFAULT_STORE,
    READABLE_STORAGE_CLASS,
    File,
    FileStatus,
    FileValues,
    Visibility,
    new_id,
    utcnow,
)
from filestore.metadata.db.store._sql import (
    _CAS_ATTEMPTS,
    Executor,
    KeysetCursor,
    _check_labels,
    _check_name,
    _check_non_negative,
    _check_sha256,
    _file_row,
    _load_file,
    _require,
    _table,
    _values_of,
    has_prefix,
)
from filestore.metadata.db.store.blobs import _forget_blobs_at, _reference_blob, _release_blob, get_blob
from filestore.metadata.db.store.quotas import refund_quota
from filestore.metadata.db.store.results import _clear_processing_results, _drop_derivatives

__all__ = [
    "MAX_PAGE_SIZE",
    "STATES_WITH_BYTES",
    "FileDeletion",
    "FileFilter",
    "FilePage",
    "allowed_sources",
    "create_file",
    "delete_file",
    "fail_file_without_object",
    "get_file",
    "list_files",
    "quarantine_content",
    "transition_file",
    "update_file",
    "update_file_facts",
]

MAX_PAGE_SIZE = 1000


# The file lifecycle. For every target, the states it may be entered from; DELETED is reachable from
# everywhere. Re-applying the current state is handled separately as an idempotent no-op.
_LIVE_STATES = frozenset(FileStatus) - {FileStatus.DELETED}
_SOURCES: dict[FileStatus, frozenset[FileStatus]] = {
    FileStatus.PENDING: frozenset(),
    # Back from an outcome of the pipeline: ReprocessFile runs the pipeline again.
    FileStatus.UPLOADED: frozenset(
        {FileStatus.PENDING, FileStatus.READY, FileStatus.QUARANTINED, FileStatus.FAILED}
    ),
    FileStatus.PROCESSING: frozenset({FileStatus.UPLOADED}),
    FileStatus.READY: frozenset({FileStatus.PROCESSING}),
    # From READY too: bytes that changed in storage after they were verified are quarantined.
    FileStatus.QUARANTINED: frozenset({FileStatus.PROCESSING, FileStatus.READY}),
    FileStatus.FAILED: frozenset({FileStatus.PROCESSING}),
    FileStatus.DELETED: _LIVE_STATES,
}
# States in which a file's bytes have been settled into ``used_bytes`` (see ``transition_file``).
_COUNTED_STATES = _LIVE_STATES - {FileStatus.PENDING}
#: States in which a file's bytes must be in storage: the broker saw them before UPLOADED, and nothing
#: has set the file aside since (QUARANTINED and FAILED bytes are never served and may be gone on purpose).
STATES_WITH_BYTES = frozenset({FileStatus.UPLOADED, FileStatus.PROCESSING, FileStatus.READY})


@dataclass(frozen=True, slots=True)
class FilePage:
    files: list[File]
    next_cursor: KeysetCursor | None


async def get_file(
    db: Executor, *, tenant: str | None, file_id: str, include_deleted: bool = False
) -> Row[Any]:
    """The file ``file_id`` of ``tenant`` (any tenant when ``None``) as a Row of its columns; a deleted
    file is NotFound unless ``include_deleted``."""
    return await _file_row(db, tenant=tenant, file_id=file_id, include_deleted=include_deleted)


_INSERT_FILE = insert(_table(File))


async def create_file(
    db: Executor,
    *,
    tenant: str,
    owner: str,
    name: str,
    declared_content_type: str,
    size: int,
    sha256: str | None = None,
    labels: Mapping[str, str] | None = None,
    visibility: Visibility = Visibility.PRIVATE,
    blob_id: str | None = None,
    file_id: str | None = None,
    store: str = DEFAULT_STORE,
) -> FileValues:
    """A new PENDING file; its storage key is made here, from ids only, and so is its id unless the
    caller chose it (``file_id``: the broker, which creates a multipart upload at the file's key first).
    Answers the values written (one INSERT, nothing read back).

    With ``blob_id`` the file is a deduplicated copy: it shares the tenant's verified blob (whose
    reference count goes up by one), takes the blob's storage key and verified digest, and no bytes
    need to move. The blob must belong to ``tenant``, be verified, and match ``size`` and ``sha256``.
    """
    _require(tenant, "tenant")
    _require(owner, "owner")
    _check_name(name)
    _require(declared_content_type, "declared_content_type")
    _check_non_negative(size, "size")
    _check_sha256(sha256)
    file_id = file_id or new_id()
    storage_key = original_key(tenant, file_id)
    verified_sha256: str | None = None
    if blob_id is not None:
        blob = await get_blob(db, tenant=tenant, blob_id=blob_id)
        if sha256 is not None and sha256 != blob.sha256:
            raise InvalidArgument("sha256 differs from the blob's digest", reason=Reason.SHA256_MISMATCH)
        if size != blob.size:
            raise InvalidArgument("size differs from the blob's size", reason=Reason.SIZE_MISMATCH)
        if blob.store != store:
            # Dedup never crosses stores: the residency that placed this file may exclude the blob's.
            raise FailedPrecondition(
                "the blob is held in another store",
                reason=Reason.RESIDENCY_VIOLATION,
                metadata={"store": store},
            )
        # Validated before the reference is taken so that a refusal leaves nothing behind.
        await _reference_blob(db, blob_id=blob.id)
        storage_key = blob.storage_key
        verified_sha256 = blob.sha256
        sha256 = blob.sha256
    now = utcnow()
    file = FileValues(
        id=file_id,
        tenant=tenant,
        owner=owner,
        name=name,
        declared_content_type=declared_content_type,
        size=size,
        sniffed_content_type=None,
        sha256=sha256,
        verified_sha256=verified_sha256,
        storage_key=storage_key,
        store=store,
        blob_id=blob_id,
        status=FileStatus.PENDING,
        status_reason=None,
        version=1,
        labels=_check_labels(labels or {}),
        visibility=visibility,
        extracted_text=None,
        created_at=now,
        updated_at=now,
        deleted_at=None,
        storage_class=READABLE_STORAGE_CLASS,
        legal_hold=False,
    )
    await db.execute(_INSERT_FILE, _values_of(file))
    return file


@dataclass(frozen=True, slots=True)
class FileFilter:
    """Filters of :func:`list_files`, all ANDed; ``None`` (or empty) means "any"."""

    owner: str | None = None
    #: Any of these states; empty means every state but DELETED.
    statuses: frozenset[FileStatus] = frozenset()
    #: Prefix of the sniffed content type, else the declared one (``"image/"``).
    content_type_prefix: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    #: Files carrying every one of these labels with exactly these values.
    labels: Mapping[str, str] | None = None
    #: Case-sensitive prefix of the display name.
    name_prefix: str | None = None
    #: Case-insensitive substring of the extracted (OCR) text.
    text_contains: str | None = None


def _filter_conditions(filters: FileFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.owner is not None:
        conditions.append(File.owner == filters.owner)
    if filters.statuses:
        conditions.append(File.status.in_(sorted(filters.statuses)))
    else:
        conditions.append(File.status != FileStatus.DELETED)
    if filters.content_type_prefix:
        content_type = func.coalesce(File.sniffed_content_type, File.declared_content_type)
        conditions.append(has_prefix(content_type, filters.content_type_prefix))
    if filters.created_after is not None:
        conditions.append(File.created_at >= filters.created_after)
    if filters.created_before is not None:
        conditions.append(File.created_at < filters.created_before)
    for key, value in (filters.labels or {}).items():
        # JSON path access renders as json_extract on SQLite and ->> on PostgreSQL.
        conditions.append(File.labels[key].as_string() == value)
    if filters.name_prefix:
        conditions.append(has_prefix(File.name, filters.name_prefix))
    if filters.text_contains:
        conditions.append(File.extracted_text.icontains(filters.text_contains, autoescape=True))
    return conditions


async def list_files(
    session: AsyncSession,
    *,
    tenant: str,
    filters: FileFilter | None = None,
    page_size: int = 50,
    after: KeysetCursor | None = None,
) -> FilePage:
    """One page of ``tenant``'s files, newest first (``created_at``, then ``id``), keyset-paginated.

    Rows created while a client pages never shift later pages, unlike OFFSET paging. The servicer
    owns the page token: it must bind the cursor to the filters it was issued for.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be between 1 and {MAX_PAGE_SIZE}",
            reason=Reason.INVALID_PAGE_SIZE,
            metadata={"max_page_size": str(MAX_PAGE_SIZE)},
        )
    stmt = select(File).where(File.tenant == tenant, *_filter_conditions(filters or FileFilter()))
    if after is not None:
        # A plain tuple (not tuple_) so the bounds are typed like the columns: UtcDateTime normalises
        # the cursor to UTC before SQLite compares it as text.
        stmt = stmt.where(tuple_(File.created_at, File.id) < (after.created_at, after.id))
    stmt = stmt.order_by(File.created_at.desc(), File.id.desc()).limit(page_size + 1)
    files = list((await session.scalars(stmt)).all())
    next_cursor = None
    if len(files) > page_size:
        files = files[:page_size]
        next_cursor = KeysetCursor(created_at=files[-1].created_at, id=files[-1].id)
    return FilePage(files=files, next_cursor=next_cursor)


def _etag_mismatch(file: File, expected_version: int) -> Aborted:
    return Aborted(
        "the file changed since it was read",
        reason=Reason.ETAG_MISMATCH,
        metadata={"file_id": file.id, "expected_etag": str(expected_version), "etag": str(file.version)},
    )


async def _compare_and_set_file(
    session: AsyncSession, file: File, values: dict[str, Any], *, expected_status: FileStatus
) -> File | None:
    """Apply ``values`` (plus a version bump) only if the row is still as ``file`` shows it."""
    now = utcnow()
    stmt = (
        update(File)
        .where(File.id == file.id, File.version == file.version, File.status == expected_status)
        .values(version=File.version + 1, updated_at=now, **values)
        .returning(File)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()


def allowed_sources(to_status: FileStatus) -> frozenset[FileStatus]:
    """The states a file may move to ``to_status`` from (the current state itself is a no-op)."""
    return _SOURCES[to_status]


async def _transition(
    session: AsyncSession,
    *,
    tenant: str | None,
    file_id: str,
    to_status: FileStatus,
    reason: str | None,
    expected_version: int | None,
) -> tuple[File, list[str]]:
    for _ in range(_CAS_ATTEMPTS):
        file = await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=True)
        if expected_version is not None and file.version != expected_version:
            raise _etag_mismatch(file, expected_version)
        previous = file.status
        if previous == to_status:
            return file, []
        if previous not in _SOURCES[to_status]:
            raise FailedPrecondition(
                f"a {previous} file cannot become {to_status}",
                reason=Reason.ILLEGAL_TRANSITION,
                metadata={"file_id": file_id, "from": str(previous), "to": str(to_status)},
            )
        if to_status == FileStatus.DELETED and file.legal_hold and previous != FileStatus.PENDING:
            # A PENDING file holds no bytes yet: its abandoned upload is reaped whatever the hold.
            raise FailedPrecondition(
                "the file is under legal hold", reason=Reason.LEGAL_HOLD, metadata={"file_id": file_id}
            )
        values: dict[str, Any] = {"status": to_status, "status_reason": reason}
        if to_status == FileStatus.DELETED:
            values["deleted_at"] = utcnow()
        moved = await _compare_and_set_file(session, file, values, expected_status=previous)
        if moved is None:
            continue
        orphaned: list[str] = []
        if to_status == FileStatus.DELETED:
            orphaned = await _on_deleted(session, moved, previous)
        elif to_status == FileStatus.UPLOADED and previous != FileStatus.PENDING:
            # Reprocessing: without its old results every step runs again (the pipeline skips the
            # steps it finds settled, which is what makes a redelivered event resume).
            await _clear_processing_results(session, file_id=moved.id)
        return moved, orphaned
    raise Aborted(
        "the file is being changed concurrently; retry",
        reason=Reason.CONCURRENT_MODIFICATION,
        metadata={"file_id": file_id},
    )


async def transition_file(
    session: AsyncSession,
    *,
    tenant: str | None,
    file_id: str,
    to_status: FileStatus,
    reason: str | None = None,
    expected_version: int | None = None,
) -> File:
    """Move a file along its lifecycle; the one place the lifecycle is enforced.

    PENDING → UPLOADED → PROCESSING → READY | QUARANTINED | FAILED, and DELETED from any state;
    READY, QUARANTINED and FAILED may go back to UPLOADED to be processed again, which clears the
    file's step results; READY may become QUARANTINED when its stored bytes changed after they were
    verified.
    Asking for the state the file is already in returns the row unchanged (events are redelivered);
    any other move raises ``FailedPrecondition(reason=Reason.ILLEGAL_TRANSITION)``. A stale
    ``expected_version`` raises ``Aborted(reason=Reason.ETAG_MISMATCH)``.

    Moving to DELETED does what :func:`delete_file` does but does not tell which storage objects
    became garbage; prefer :func:`delete_file` for deletions.
    """
    file, _ = await _transition(
        session,
        tenant=tenant,
        file_id=file_id,
        to_status=to_status,
        reason=reason,
        expected_version=expected_version,
    )
    return file


@dataclass(frozen=True, slots=True)
class FileDeletion:
    file: File
    #: Objects no live file needs any more: delete them from storage after the commit. Empty when
    #: the file was already deleted (the first deletion reported them).
    orphaned_storage_keys: list[str]


async def delete_file(
    session: AsyncSession,
    *,
    tenant: str | None,
    file_id: str,
    expected_version: int | None = None,
    reason: str | None = None,
) -> FileDeletion:
    """Soft-delete a file (status DELETED, ``deleted_at`` set); deleting a deleted file is a no-op.

    In the same transaction, and exactly once because only the transaction that wins the move does
    it: the file's blob reference is dropped (a blob nobody references any more is forgotten, so it
    stops being a dedup target), and when the file's bytes had been settled into the quota (any state
    after PENDING) its ``size`` is refunded to the owner's and the tenant's quota. A PENDING file's
    reservation belongs to its upload and is released by :func:`end_upload`.
    """
    file, orphaned = await _transition(
        session,
        tenant=tenant,
        file_id=file_id,
        to_status=FileStatus.DELETED,
        reason=reason,
        expected_version=expected_version,
    )
    return FileDeletion(file=file, orphaned_storage_keys=orphaned)


async def _on_deleted(session: AsyncSession, file: File, previous: FileStatus) -> list[str]:
    if previous in _COUNTED_STATES:
        await refund_quota(session, tenant=file.tenant, owner=file.owner, nbytes=file.size)
    # Derivatives are regenerable and nobody can read them through a deleted file: they go with it.
    derivative_keys = await _drop_derivatives(session, file_id=file.id)
    return derivative_keys + await _release_blob(session, file)


async def update_file(
    session: AsyncSession,
    *,
    tenant: str,
    file_id: str,
    expected_version: int | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    visibility: Visibility | None = None,
) -> File:
    """Change the client-editable fields given (``None`` leaves a field alone; ``{}`` clears labels).

    Deleted files are NotFound; a stale ``expected_version`` raises ``Aborted(reason=Reason.ETAG_MISMATCH)``.
    """
    values: dict[str, Any] = {}
    if name is not None:
        _check_name(name)
        values["name"] = name
    if labels is not None:
        values["labels"] = _check_labels(labels)
    if visibility is not None:
        values["visibility"] = visibility
    return await _set_fields(
        session, tenant=tenant, file_id=file_id, values=values, expected_version=expected_version
    )


async def update_file_facts(
    session: AsyncSession,
    *,
    tenant: str | None,
    file_id: str,
    verified_sha256: str | None = None,
    sniffed_content_type: str | None = None,
    extracted_text: str | None = None,
) -> File:
    """Record what processing learned about a live file (``None`` leaves a field alone)."""
    _check_sha256(verified_sha256, "verified_sha256")
    values: dict[str, Any] = {}
    if verified_sha256 is not None:
        values["verified_sha256"] = verified_sha256
    if sniffed_content_type is not None:
        values["sniffed_content_type"] = sniffed_content_type
    if extracted_text is not None:
        values["extracted_text"] = extracted_text
    return await _set_fields(session, tenant=tenant, file_id=file_id, values=values, expected_version=None)


async def _set_fields(
    session: AsyncSession,
    *,
    tenant: str | None,
    file_id: str,
    values: dict[str, Any],
    expected_version: int | None,
) -> File:
    """Set ``values`` on a live file in whatever state it is, by compare-and-set on its version."""
    for _ in range(_CAS_ATTEMPTS):
        file = await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
        if expected_version is not None and file.version != expected_version:
            raise _etag_mismatch(file, expected_version)
        if not values:
            return file
        updated = await _compare_and_set_file(session, file, values, expected_status=file.status)
        if updated is not None:
            return updated
    raise Aborted("the file is being changed concurrently; retry", reason=Reason.CONCURRENT_MODIFICATION)


async def quarantine_content(
    session: AsyncSession, *, tenant: str, storage_key: str, reason: str
) -> list[File]:
    """The bytes at ``storage_key`` changed after they were verified: quarantine every READY or
    PROCESSING file of ``tenant`` reading them, and forget the blob at that key.

    Deduplicated files read their content's key, so one replaced object (a browser form submitted
    again while its policy is valid) would otherwise go on being served to every file sharing it. The
    blob row goes (its files' ``blob_id`` is cleared by the foreign key): the key no longer holds the
    verified digest, so it must not be offered to anyone as that content again; a later upload of the
    original bytes makes a new blob of its own object. Answers the files moved now; files already
    QUARANTINED are left as they are, so calling again answers none.
    """
    affected = (
        await session.scalars(
            select(File.id)
            .where(
                File.tenant == tenant,
                File.storage_key == storage_key,
                File.status.in_([FileStatus.READY, FileStatus.PROCESSING]),
            )
            .order_by(File.id)
        )
    ).all()
    quarantined = []
    for file_id in affected:
        file, _ = await _transition(
            session,
            tenant=tenant,
            file_id=file_id,
            to_status=FileStatus.QUARANTINED,
            reason=reason,
            expected_version=None,
        )
        quarantined.append(file)
    await _forget_blobs_at(session, tenant=tenant, storage_key=storage_key)
    for file in quarantined:
        # The foreign key's ON DELETE SET NULL cleared the column in the rows; mirror it in memory.
        set_committed_value(file, "blob_id", None)
    return quarantined


async def fail_file_without_object(
    session: AsyncSession, *, file_id: str, storage_key: str, reason: str
) -> File | None:
    """Mark FAILED, with ``status_reason`` ``reason``, a file whose bytes storage lost, if it still reads
    them from ``storage_key`` and is in one of :data:`STATES_WITH_BYTES`; answers the failed row, or
    ``None`` when the file changed meanwhile.

    For the reconciler, and outside the lifecycle table on purpose: no state a file reaches by
    processing says "its bytes were lost", and FAILED is the one that is honest about it without losing
    the record (the owner still sees the file and why it cannot be downloaded; deleting it refunds the
    quota as usual), so nothing serves a URL to bytes that are not there. The version bump makes etags
    held by clients stale, as any change does.
    """
    stmt = (
        update(File)
        .where(
            File.id == file_id, File.storage_key == storage_key, File.status.in_(sorted(STATES_WITH_BYTES))
        )
        .values(status=FileStatus.FAILED, status_reason=reason, version=File.version + 1, updated_at=utcnow())
        .returning(File)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()
