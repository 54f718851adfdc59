"""Data access for the metadata service: the only code that writes the catalogue.

Conventions shared by every function here:

* The caller owns the transaction (``async with session.begin(): ...``); nothing here commits, so one
  RPC's writes land or vanish together. A raised error leaves the transaction to be rolled back.
* ``tenant`` scopes every lookup. A row of another tenant is reported exactly like a missing row
  (``NotFound``), so ids of other tenants cannot be probed. ``tenant=None`` is reserved for trusted
  internal callers (the processor acting for any tenant) and must never come from a client.
* Concurrency is handled with conditional UPDATEs (compare-and-set on a row's state or version), so
  the same code is correct on PostgreSQL (row locks, READ COMMITTED re-check) and on SQLite (one
  writer at a time, see :func:`filestore.metadata.db.engine.create_engine`).
* Failures are typed :mod:`filestore.core.errors` with stable ``reason`` values.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from filestore.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    derivative_not_found,
    file_not_found,
    grant_not_found,
    upload_ended,
    upload_not_found,
)
from filestore.core.keys import KeyKind, original_key, parse_key
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_NAME_CHARS
from filestore.metadata.db.models import (
    Blob,
    Derivative,
    File,
    FileStatus,
    Grant,
    IdempotencyKey,
    PartChecksum,
    Permission,
    ProcessingOutcome,
    ProcessingResult,
    Quota,
    Upload,
    UploadKind,
    UploadState,
    Visibility,
    new_id,
    utcnow,
)

__all__ = [
    "MAX_PAGE_SIZE",
    "BlobLink",
    "FileCursor",
    "FileDeletion",
    "FileFilter",
    "FilePage",
    "IdempotentSave",
    "UploadOutcome",
    "add_derivative",
    "allowed_sources",
    "attach_storage_upload",
    "attached_storage_uploads",
    "claim_expired_uploads",
    "complete_upload",
    "create_file",
    "create_grant",
    "delete_file",
    "end_upload",
    "find_dedup_blob",
    "get_blob",
    "get_derivative",
    "get_file",
    "get_grant",
    "get_idempotent",
    "get_processing_result",
    "get_quota",
    "get_upload",
    "is_permitted",
    "link_file_blob",
    "list_derivatives",
    "list_files",
    "list_grants",
    "list_processing_results",
    "list_uploads",
    "purge_idempotency_keys",
    "quarantine_content",
    "record_upload",
    "refund_quota",
    "register_blob",
    "release_quota",
    "reserve_quota",
    "revoke_grant",
    "save_idempotent",
    "set_processing_result",
    "set_quota",
    "set_upload_state",
    "settle_quota",
    "transition_file",
    "update_file",
    "update_file_facts",
]

MAX_PAGE_SIZE = 1000
#: Compare-and-set attempts before giving up with ``Aborted``; each failed attempt means another
#: transaction changed the row in between, so more than a handful means a hot row, not bad luck.
_CAS_ATTEMPTS = 8
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

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


# ----------------------------------------------------------------------------------- helpers


def _require(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(
            f"{field} must not be empty", reason=Reason.MISSING_FIELD, metadata={"field": field}
        )


def _check_sha256(value: str | None, field: str = "sha256") -> None:
    if value is not None and not _SHA256_RE.match(value):
        raise InvalidArgument(
            f"{field} must be 64 lowercase hex characters",
            reason=Reason.INVALID_SHA256,
            metadata={"field": field},
        )


def _check_non_negative(value: int, field: str) -> None:
    if value < 0:
        raise InvalidArgument(
            f"{field} must not be negative", reason=Reason.INVALID_SIZE, metadata={"field": field}
        )


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(
            f"name must be 1 to {MAX_NAME_CHARS} characters",
            reason=Reason.INVALID_NAME,
            metadata={"max_chars": str(MAX_NAME_CHARS)},
        )


def _check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvalidArgument(
                "labels must map non-empty strings to strings", reason=Reason.INVALID_LABELS
            )
    return dict(labels)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _clamped_decrement(column: Any, amount: int) -> ColumnElement[int]:
    """``max(column - amount, 0)`` in portable SQL: releasing twice must not drive a counter negative."""
    return case((column >= amount, column - amount), else_=0)


# The hot paths (BeginUpload, GetUploadRecord, AuthorizeRead, idempotency) run statements built once
# here with bind parameters: building a statement and its cache key costs more than executing it.
# Every read also takes ``populate_existing``: a retry after a lost compare-and-set must see the row
# as it is now, not the copy the session loaded before.
_FRESH = {"populate_existing": True}
_INSERTS: dict[type[Any], Insert] = {}


async def _insert_loaded(session: AsyncSession, row: Any) -> None:
    """INSERT ``row`` (every column set) with one statement and attach it to the session as a loaded,
    persistent object, without the unit of work's flush (several times the cost of the INSERT).

    For rows written once and read back in the same transaction; later changes go through the
    usual UPDATEs.
    """
    model = type(row)
    statement = _INSERTS.get(model)
    if statement is None:
        # Of the table, not the entity: an entity INSERT takes the ORM's bulk-insert path.
        statement = _INSERTS[model] = insert(model.__table__)
    values: dict[str, Any] = {}
    for attribute in inspect(model).column_attrs:
        if attribute.key not in row.__dict__:
            # Left unset, a column would be expired on the attached object and loaded again on first
            # read; a column with a default must be set by the caller, the others are NULL.
            if any(column.default is not None for column in attribute.columns):
                raise TypeError(f"{model.__name__}.{attribute.key} must be set")
            setattr(row, attribute.key, None)
        values[attribute.key] = getattr(row, attribute.key)
    await session.execute(statement, values)
    make_transient_to_detached(row)
    session.add(row)


# ------------------------------------------------------------------------------------- files


@dataclass(frozen=True, slots=True)
class FileCursor:
    """Position after the last file of a page; the servicer turns it into an opaque signed token."""

    created_at: datetime
    id: str


@dataclass(frozen=True, slots=True)
class FilePage:
    files: list[File]
    next_cursor: FileCursor | None


def _file_lookup(*, by_tenant: bool, include_deleted: bool) -> Select[File]:
    stmt = select(File).where(File.id == bindparam("file_id"))
    if by_tenant:
        stmt = stmt.where(File.tenant == bindparam("tenant"))
    if not include_deleted:
        stmt = stmt.where(File.status != FileStatus.DELETED)
    return stmt.execution_options(**_FRESH)


_FILE_LOOKUPS = {
    (by_tenant, include_deleted): _file_lookup(by_tenant=by_tenant, include_deleted=include_deleted)
    for by_tenant in (False, True)
    for include_deleted in (False, True)
}


async def _load_file(
    session: AsyncSession, *, tenant: str | None, file_id: str, include_deleted: bool
) -> File:
    found = await session.scalar(
        _FILE_LOOKUPS[tenant is not None, include_deleted], {"file_id": file_id, "tenant": tenant}
    )
    if found is None:
        raise file_not_found(file_id)
    return found


async def get_file(
    session: AsyncSession, *, tenant: str | None, file_id: str, include_deleted: bool = False
) -> File:
    """The file ``file_id`` of ``tenant`` (any tenant when ``None``); a deleted file is NotFound
    unless ``include_deleted``."""
    return await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=include_deleted)


async def create_file(
    session: AsyncSession,
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
) -> File:
    """A new PENDING file; its id and storage key are made here, from ids only.

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
    file_id = new_id()
    storage_key = original_key(tenant, file_id)
    verified_sha256: str | None = None
    if blob_id is not None:
        blob = await get_blob(session, tenant=tenant, blob_id=blob_id)
        if sha256 is not None and sha256 != blob.sha256:
            raise InvalidArgument("sha256 differs from the blob's digest", reason=Reason.SHA256_MISMATCH)
        if size != blob.size:
            raise InvalidArgument("size differs from the blob's size", reason=Reason.SIZE_MISMATCH)
        # Validated before the reference is taken so that a refusal leaves nothing behind.
        await _reference_blob(session, blob)
        storage_key = blob.storage_key
        verified_sha256 = blob.sha256
        sha256 = blob.sha256
    now = utcnow()
    file = File(
        id=file_id,
        tenant=tenant,
        owner=owner,
        name=name,
        declared_content_type=declared_content_type,
        size=size,
        sha256=sha256,
        verified_sha256=verified_sha256,
        storage_key=storage_key,
        blob_id=blob_id,
        status=FileStatus.PENDING,
        version=1,
        labels=_check_labels(labels or {}),
        visibility=visibility,
        created_at=now,
        updated_at=now,
    )
    await _insert_loaded(session, file)
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


def _has_prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    # substr rather than LIKE: SQLite's LIKE ignores case, and the prefix needs no escaping.
    return func.substr(column, 1, len(prefix)) == prefix


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
        conditions.append(_has_prefix(content_type, filters.content_type_prefix))
    if filters.created_after is not None:
        conditions.append(File.created_at >= filters.created_after)
    if filters.created_before is not None:
        conditions.append(File.created_at < filters.created_before)
    for key, value in (filters.labels or {}).items():
        # JSON path access renders as json_extract on SQLite and ->> on PostgreSQL.
        conditions.append(File.labels[key].as_string() == value)
    if filters.name_prefix:
        conditions.append(_has_prefix(File.name, filters.name_prefix))
    if filters.text_contains:
        conditions.append(File.extracted_text.icontains(filters.text_contains, autoescape=True))
    return conditions


async def list_files(
    session: AsyncSession,
    *,
    tenant: str,
    filters: FileFilter | None = None,
    page_size: int = 50,
    after: FileCursor | None = None,
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
        next_cursor = FileCursor(created_at=files[-1].created_at, id=files[-1].id)
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
            await session.execute(
                delete(ProcessingResult)
                .where(ProcessingResult.file_id == moved.id)
                .execution_options(synchronize_session=False)
            )
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
    derivative_keys = list(
        (
            await session.scalars(
                delete(Derivative)
                .where(Derivative.file_id == file.id)
                .returning(Derivative.storage_key)
                .execution_options(synchronize_session=False)
            )
        ).all()
    )
    return derivative_keys + await _release_blob(session, file)


async def _release_blob(session: AsyncSession, file: File) -> list[str]:
    """Drop the file's blob reference; the storage keys no record needs any more."""
    if file.blob_id is None:
        return [file.storage_key]
    released = (
        await session.execute(
            update(Blob)
            .where(Blob.id == file.blob_id)
            .values(ref_count=_clamped_decrement(Blob.ref_count, 1))
            .returning(Blob.ref_count, Blob.storage_key)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if released is None:
        return []
    ref_count, blob_key = released
    # Files linked before link_file_blob moved them onto the blob's object kept a copy of their own.
    orphaned = [file.storage_key] if file.storage_key != blob_key else []
    if ref_count == 0:
        # The row lock taken by the decrement makes a concurrent dedup wait and then find no blob.
        await session.execute(
            delete(Blob).where(Blob.id == file.blob_id).execution_options(synchronize_session=False)
        )
        # The foreign key's ON DELETE SET NULL cleared the column in the row; mirror it in memory.
        set_committed_value(file, "blob_id", None)
        orphaned.append(blob_key)
    return orphaned


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
    for _ in range(_CAS_ATTEMPTS):
        file = await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
        if not values:
            return file
        updated = await _compare_and_set_file(session, file, values, expected_status=file.status)
        if updated is not None:
            return updated
    raise Aborted("the file is being changed concurrently; retry", reason=Reason.CONCURRENT_MODIFICATION)


# ------------------------------------------------------------------------------------- blobs


async def get_blob(session: AsyncSession, *, tenant: str | None, blob_id: str) -> Blob:
    stmt = select(Blob).where(Blob.id == blob_id)
    if tenant is not None:
        stmt = stmt.where(Blob.tenant == tenant)
    blob = await session.scalar(stmt.execution_options(populate_existing=True))
    if blob is None:
        raise NotFound(
            f"blob {blob_id!r} not found", reason=Reason.BLOB_NOT_FOUND, metadata={"blob_id": blob_id}
        )
    return blob


async def find_dedup_blob(session: AsyncSession, *, tenant: str, owner: str, sha256: str) -> Blob | None:
    """The tenant's verified blob with this digest, if ``owner`` already owns a live file of it.

    Knowing a digest is no proof of holding the content, so a blob is offered only to whoever
    already has it; everyone else uploads, and :func:`link_file_blob` shares the bytes once they
    are verified. Dedup never crosses tenants.
    """
    _check_sha256(sha256)
    owned = (
        select(File.id)
        .where(
            File.blob_id == Blob.id,
            File.tenant == tenant,
            File.owner == owner,
            File.status != FileStatus.DELETED,
        )
        .exists()
    )
    stmt = select(Blob).where(Blob.tenant == tenant, Blob.sha256 == sha256, Blob.verified.is_(True), owned)
    return await session.scalar(stmt.execution_options(populate_existing=True))


async def register_blob(
    session: AsyncSession, *, tenant: str, sha256: str, size: int, storage_key: str, verified: bool = True
) -> Blob:
    """The tenant's blob for ``sha256``, created if missing (``ref_count`` 0; see ``link_file_blob``).

    Concurrent registrations of the same digest resolve on the unique (tenant, sha256) constraint:
    the first storage key wins and later callers get that row. ``verified`` only ever turns on.
    """
    _require(tenant, "tenant")
    _check_sha256(sha256)
    _check_non_negative(size, "size")
    values = {
        "id": new_id(),
        "tenant": tenant,
        "sha256": sha256,
        "size": size,
        "storage_key": storage_key,
        "ref_count": 0,
        "verified": verified,
        "created_at": utcnow(),
    }
    if _dialect(session) == "postgresql":
        pg_stmt = postgresql.insert(Blob).values(values)
        stmt: Any = pg_stmt.on_conflict_do_update(
            index_elements=[Blob.tenant, Blob.sha256],
            set_={"verified": or_(Blob.verified, pg_stmt.excluded.verified)},
        )
    else:
        lite_stmt = sqlite.insert(Blob).values(values)
        stmt = lite_stmt.on_conflict_do_update(
            index_elements=[Blob.tenant, Blob.sha256],
            set_={"verified": or_(Blob.verified, lite_stmt.excluded.verified)},
        )
    blob: Blob = (
        await session.scalars(stmt.returning(Blob), execution_options={"populate_existing": True})
    ).one()
    return blob


async def _reference_blob(session: AsyncSession, blob: Blob) -> None:
    stmt = (
        update(Blob)
        .where(Blob.id == blob.id, Blob.verified.is_(True))
        .values(ref_count=Blob.ref_count + 1)
        .returning(Blob.id)
        .execution_options(synchronize_session=False)
    )
    if (await session.execute(stmt)).first() is None:
        raise FailedPrecondition(
            "blob is not verified and cannot be shared yet",
            reason=Reason.BLOB_NOT_VERIFIED,
            metadata={"blob_id": blob.id},
        )


@dataclass(frozen=True, slots=True)
class BlobLink:
    file: File
    #: The file's own copy of the bytes when the blob keeps them elsewhere: delete it from storage
    #: after the commit. Empty when the file's object is the blob's, or the file was linked before.
    orphaned_storage_keys: list[str]


async def link_file_blob(
    session: AsyncSession, *, tenant: str | None, file_id: str, blob_id: str
) -> BlobLink:
    """Point a file at the blob holding its (verified) bytes, taking one reference; idempotent.

    When the blob's bytes are in another object (the tenant held the content before this file was
    uploaded), the file's ``storage_key`` moves to that object, so storage keeps one copy: a file's
    ``storage_key`` is always where its bytes are read from.
    """
    file = await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
    if file.blob_id == blob_id:
        return BlobLink(file=file, orphaned_storage_keys=[])
    if file.blob_id is not None:
        raise FailedPrecondition(
            "file already points at another blob",
            reason=Reason.BLOB_ALREADY_LINKED,
            metadata={"file_id": file_id, "blob_id": file.blob_id},
        )
    blob = await get_blob(session, tenant=file.tenant, blob_id=blob_id)
    own_key = file.storage_key
    stmt = (
        update(File)
        .where(File.id == file.id, File.blob_id.is_(None))
        .values(blob_id=blob.id, storage_key=blob.storage_key, version=File.version + 1, updated_at=utcnow())
        .returning(File)
        .execution_options(populate_existing=True)
    )
    linked = (await session.scalars(stmt)).one_or_none()
    if linked is None:
        # Another transaction linked it first; report what it did rather than double-counting.
        return await link_file_blob(session, tenant=tenant, file_id=file_id, blob_id=blob_id)
    await session.execute(
        update(Blob)
        .where(Blob.id == blob.id)
        .values(ref_count=Blob.ref_count + 1)
        .execution_options(synchronize_session=False)
    )
    return BlobLink(file=linked, orphaned_storage_keys=[own_key] if own_key != blob.storage_key else [])


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
    await session.execute(
        delete(Blob)
        .where(Blob.tenant == tenant, Blob.storage_key == storage_key)
        .execution_options(synchronize_session=False)
    )
    for file in quarantined:
        # The foreign key's ON DELETE SET NULL cleared the column in the rows; mirror it in memory.
        set_committed_value(file, "blob_id", None)
    return quarantined


# ----------------------------------------------------------------------------------- uploads


async def record_upload(
    session: AsyncSession,
    *,
    tenant: str,
    file_id: str,
    kind: UploadKind,
    part_size: int,
    part_count: int,
    expires_at: datetime,
    reserved_bytes: int = 0,
    storage_upload_id: str | None = None,
    part_checksum: PartChecksum = PartChecksum.NONE,
) -> Upload:
    """A new OPEN upload session for ``file_id`` (which must be a live file of ``tenant``)."""
    _check_non_negative(part_size, "part_size")
    _check_non_negative(part_count, "part_count")
    _check_non_negative(reserved_bytes, "reserved_bytes")
    # Usually the file was created a moment ago in this very transaction: the session's identity
    # map answers without a query (a row is only ever deleted logically, so it cannot be stale).
    file = await session.get(File, file_id)
    if file is None or file.tenant != tenant or file.status == FileStatus.DELETED:
        raise file_not_found(file_id)
    now = utcnow()
    upload = Upload(
        id=new_id(),
        file_id=file_id,
        tenant=tenant,
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
    )
    await _insert_loaded(session, upload)
    return upload


_UPLOAD_BY_ID = select(Upload).where(Upload.id == bindparam("upload_id")).execution_options(**_FRESH)
_UPLOAD_BY_TENANT_AND_ID = _UPLOAD_BY_ID.where(Upload.tenant == bindparam("tenant"))


async def get_upload(session: AsyncSession, *, tenant: str | None, upload_id: str) -> Upload:
    upload = await session.scalar(
        _UPLOAD_BY_ID if tenant is None else _UPLOAD_BY_TENANT_AND_ID,
        {"upload_id": upload_id, "tenant": tenant},
    )
    if upload is None:
        raise upload_not_found(upload_id)
    return upload


async def list_uploads(session: AsyncSession, *, tenant: str | None, file_id: str) -> list[Upload]:
    """The uploads of a file, oldest first."""
    stmt = select(Upload).where(Upload.file_id == file_id)
    if tenant is not None:
        stmt = stmt.where(Upload.tenant == tenant)
    return list((await session.scalars(stmt.order_by(Upload.created_at, Upload.id))).all())


async def _close_upload(
    session: AsyncSession, *, tenant: str | None, upload_id: str, to_state: UploadState
) -> tuple[Upload, bool]:
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
) -> Upload:
    """Close an OPEN upload as COMPLETED, ABORTED or EXPIRED; quota and file are not touched.

    Re-applying the current state is a no-op (a retried CompleteUpload, a second reaper pass); closing
    an upload that was closed differently raises ``FailedPrecondition`` with reason
    ``UPLOAD_COMPLETED``, ``UPLOAD_ABORTED`` or ``UPLOAD_EXPIRED``, so exactly one of a racing
    complete and abort wins. Because the no-op is silent, callers that settle or release quota
    afterwards should use :func:`complete_upload` / :func:`end_upload`, which do it exactly once.
    """
    upload, _ = await _close_upload(session, tenant=tenant, upload_id=upload_id, to_state=to_state)
    return upload


async def attach_storage_upload(
    session: AsyncSession, *, tenant: str | None, upload_id: str, storage_upload_id: str
) -> Upload:
    """Store storage's multipart upload id on an OPEN upload; attaching the same id again is a no-op.

    Raises ``FailedPrecondition(reason=Reason.UPLOAD_NOT_OPEN)`` for a closed upload or one that already
    has a different id (a second CreateMultipartUpload would orphan the first's parts).
    """
    _require(storage_upload_id, "storage_upload_id")
    stmt = update(Upload).where(
        Upload.id == upload_id,
        Upload.state == UploadState.OPEN,
        or_(Upload.storage_upload_id.is_(None), Upload.storage_upload_id == storage_upload_id),
    )
    if tenant is not None:
        stmt = stmt.where(Upload.tenant == tenant)
    attached = (
        await session.scalars(
            stmt.values(storage_upload_id=storage_upload_id, updated_at=utcnow())
            .returning(Upload)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if attached is not None:
        return attached
    upload = await get_upload(session, tenant=tenant, upload_id=upload_id)
    raise FailedPrecondition(
        "upload is not open for a storage upload id",
        reason=Reason.UPLOAD_NOT_OPEN,
        metadata={"upload_id": upload_id, "state": str(upload.state)},
    )


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
    upload: Upload
    file: File
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


# ------------------------------------------------------------------------------------ grants


async def create_grant(
    session: AsyncSession,
    *,
    tenant: str,
    file_id: str,
    principal: str,
    permission: Permission,
    expires_at: datetime | None = None,
) -> Grant:
    _require(principal, "principal")
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
    grant = Grant(
        id=new_id(),
        file_id=file_id,
        tenant=tenant,
        principal=principal,
        permission=permission,
        expires_at=expires_at,
        created_at=utcnow(),
    )
    session.add(grant)
    await session.flush()
    return grant


async def get_grant(session: AsyncSession, *, tenant: str | None, grant_id: str) -> Grant:
    stmt = select(Grant).where(Grant.id == grant_id)
    if tenant is not None:
        stmt = stmt.where(Grant.tenant == tenant)
    grant = await session.scalar(stmt.execution_options(populate_existing=True))
    if grant is None:
        raise grant_not_found(grant_id)
    return grant


async def revoke_grant(session: AsyncSession, *, tenant: str, grant_id: str) -> Grant:
    """Revoke a grant; revoking a revoked grant keeps its first ``revoked_at``."""
    grant = await get_grant(session, tenant=tenant, grant_id=grant_id)
    if grant.revoked_at is not None:
        return grant
    revoked = (
        await session.scalars(
            update(Grant)
            .where(Grant.id == grant_id, Grant.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(Grant)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    return revoked or await get_grant(session, tenant=tenant, grant_id=grant_id)


def _active_grant(now: datetime) -> ColumnElement[bool]:
    return and_(Grant.revoked_at.is_(None), or_(Grant.expires_at.is_(None), Grant.expires_at > now))


async def list_grants(
    session: AsyncSession, *, tenant: str, file_id: str, active_only: bool = True, now: datetime | None = None
) -> list[Grant]:
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
    stmt = select(Grant).where(Grant.file_id == file_id, Grant.tenant == tenant)
    if active_only:
        stmt = stmt.where(_active_grant(now or utcnow()))
    return list((await session.scalars(stmt.order_by(Grant.created_at, Grant.id))).all())


async def is_permitted(
    session: AsyncSession,
    *,
    file: File,
    principal: str,
    permission: Permission,
    now: datetime | None = None,
) -> bool:
    """Whether ``principal`` may ``permission`` the (already tenant-checked) ``file``.

    The owner may do anything; anyone in the tenant may READ a PUBLIC file; otherwise an unrevoked,
    unexpired grant is needed, and a WRITE grant implies READ. Whether the file is READY and clean is
    the caller's separate question.
    """
    if principal == file.owner:
        return True
    if permission == Permission.READ and file.visibility == Visibility.PUBLIC:
        return True
    sufficient = [Permission.WRITE] if permission == Permission.WRITE else [Permission.READ, Permission.WRITE]
    stmt = (
        select(Grant.id)
        .where(
            Grant.file_id == file.id,
            Grant.tenant == file.tenant,
            Grant.principal == principal,
            Grant.permission.in_(sufficient),
            _active_grant(now or utcnow()),
        )
        .limit(1)
    )
    return (await session.scalar(stmt)) is not None


# ------------------------------------------------------------------ derivatives and results


def _upsert(session: AsyncSession, model: type[Any], values: Mapping[str, Any]) -> Any:
    """A dialect INSERT for ``model`` with ``.on_conflict_do_update`` available (both dialects
    spell it the same way); typed loosely because the two dialects' Insert classes are unrelated."""
    if _dialect(session) == "postgresql":
        return postgresql.insert(model).values(dict(values))
    return sqlite.insert(model).values(dict(values))


async def add_derivative(
    session: AsyncSession,
    *,
    tenant: str | None,
    file_id: str,
    kind: str,
    storage_key: str,
    size: int,
    content_type: str,
) -> Derivative:
    """Record (or replace) the file's derivative of ``kind``; re-running a step never duplicates."""
    _require(kind, "kind")
    _check_non_negative(size, "size")
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
    stmt = _upsert(
        session,
        Derivative,
        {
            "id": new_id(),
            "file_id": file_id,
            "kind": kind,
            "storage_key": storage_key,
            "size": size,
            "content_type": content_type,
            "created_at": utcnow(),
        },
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Derivative.file_id, Derivative.kind],
        set_={
            "storage_key": stmt.excluded.storage_key,
            "size": stmt.excluded.size,
            "content_type": stmt.excluded.content_type,
            "created_at": stmt.excluded.created_at,
        },
    )
    derivative: Derivative = (
        await session.scalars(stmt.returning(Derivative), execution_options={"populate_existing": True})
    ).one()
    return derivative


async def list_derivatives(session: AsyncSession, *, tenant: str | None, file_id: str) -> list[Derivative]:
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
    stmt = select(Derivative).where(Derivative.file_id == file_id).order_by(Derivative.kind)
    return list((await session.scalars(stmt)).all())


async def get_derivative(session: AsyncSession, *, tenant: str | None, file_id: str, kind: str) -> Derivative:
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
    stmt = select(Derivative).where(Derivative.file_id == file_id, Derivative.kind == kind)
    derivative = await session.scalar(stmt.execution_options(populate_existing=True))
    if derivative is None:
        raise derivative_not_found(file_id, kind)
    return derivative


async def set_processing_result(
    session: AsyncSession,
    *,
    tenant: str | None,
    file_id: str,
    step: str,
    outcome: ProcessingOutcome,
    details: Mapping[str, Any] | None = None,
) -> ProcessingResult:
    """Record the latest outcome of ``step`` for a file (one row per file and step).

    ``attempts`` counts the finished runs of the step: every outcome but PENDING (which marks a run
    as started) adds one, so a worker can give up after N ERRORs across redeliveries.
    """
    _require(step, "step")
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
    finished = 0 if outcome == ProcessingOutcome.PENDING else 1
    now = utcnow()
    stmt = _upsert(
        session,
        ProcessingResult,
        {
            "id": new_id(),
            "file_id": file_id,
            "step": step,
            "outcome": outcome,
            "details": dict(details or {}),
            "attempts": finished,
            "updated_at": now,
        },
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[ProcessingResult.file_id, ProcessingResult.step],
        set_={
            "outcome": stmt.excluded.outcome,
            "details": stmt.excluded.details,
            "attempts": ProcessingResult.attempts + finished,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    result: ProcessingResult = (
        await session.scalars(stmt.returning(ProcessingResult), execution_options={"populate_existing": True})
    ).one()
    return result


async def get_processing_result(
    session: AsyncSession, *, tenant: str | None, file_id: str, step: str
) -> ProcessingResult | None:
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=True)
    stmt = select(ProcessingResult).where(ProcessingResult.file_id == file_id, ProcessingResult.step == step)
    return await session.scalar(stmt.execution_options(populate_existing=True))


async def list_processing_results(
    session: AsyncSession, *, tenant: str | None, file_id: str
) -> list[ProcessingResult]:
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=True)
    stmt = select(ProcessingResult).where(ProcessingResult.file_id == file_id).order_by(ProcessingResult.step)
    return list((await session.scalars(stmt)).all())


# ------------------------------------------------------------------------------------ quotas
#
# A quota row limits a tenant (owner "") or one owner inside a tenant; an upload must fit both. A
# tenant or owner without a row is unlimited: quotas are opt-in, and a fresh deployment works before
# anyone has configured one.


def _quota_scopes(owner: str) -> list[str]:
    # Tenant row first, always: every transaction locks quota rows in the same order, so two
    # reservations can never deadlock on PostgreSQL.
    return [""] if owner == "" else ["", owner]


async def set_quota(session: AsyncSession, *, tenant: str, owner: str = "", limit_bytes: int) -> Quota:
    """Create or change the limit of a tenant (``owner=""``) or owner; usage is kept."""
    _require(tenant, "tenant")
    _check_non_negative(limit_bytes, "limit_bytes")
    stmt = _upsert(
        session,
        Quota,
        {
            "id": new_id(),
            "tenant": tenant,
            "owner": owner,
            "limit_bytes": limit_bytes,
            "used_bytes": 0,
            "reserved_bytes": 0,
        },
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Quota.tenant, Quota.owner], set_={"limit_bytes": stmt.excluded.limit_bytes}
    )
    quota: Quota = (
        await session.scalars(stmt.returning(Quota), execution_options={"populate_existing": True})
    ).one()
    return quota


async def get_quota(session: AsyncSession, *, tenant: str, owner: str = "") -> Quota | None:
    stmt = select(Quota).where(Quota.tenant == tenant, Quota.owner == owner)
    return await session.scalar(stmt.execution_options(populate_existing=True))


_QUOTA_SCOPES_WITH_LIMITS = select(Quota.owner).where(
    Quota.tenant == bindparam("tenant"), Quota.owner.in_(bindparam("scopes", expanding=True))
)
_RESERVE_IF_IT_FITS = (
    update(Quota)
    .where(
        # Not named after columns: an UPDATE reserves those names for its SET clause.
        Quota.tenant == bindparam("quota_tenant"),
        Quota.owner == bindparam("quota_owner"),
        Quota.used_bytes + Quota.reserved_bytes + bindparam("nbytes") <= Quota.limit_bytes,
    )
    .values(reserved_bytes=Quota.reserved_bytes + bindparam("nbytes"))
    .returning(Quota.id)
    .execution_options(synchronize_session=False)
)


async def _add_reserved(session: AsyncSession, *, tenant: str, owner: str, nbytes: int) -> bool:
    """Reserve under one quota row in a single conditional UPDATE; False if it does not fit."""
    result = await session.execute(
        _RESERVE_IF_IT_FITS, {"quota_tenant": tenant, "quota_owner": owner, "nbytes": nbytes}
    )
    return result.first() is not None


async def _adjust(
    session: AsyncSession, *, tenant: str, owners: Iterable[str], values: dict[str, Any]
) -> None:
    await session.execute(
        update(Quota)
        .where(Quota.tenant == tenant, Quota.owner.in_(list(owners)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def reserve_quota(session: AsyncSession, *, tenant: str, owner: str, nbytes: int) -> None:
    """Reserve ``nbytes`` against the tenant's and the owner's quota, atomically per row.

    Raises ``ResourceExhausted(reason=Reason.QUOTA_EXCEEDED)`` (metadata names the scope and the numbers)
    when either quota would be exceeded; no reservation is then left behind, even if the caller
    goes on to commit.
    """
    _check_non_negative(nbytes, "nbytes")
    scopes = _quota_scopes(owner)
    limited = set(
        (await session.scalars(_QUOTA_SCOPES_WITH_LIMITS, {"tenant": tenant, "scopes": scopes})).all()
    )
    if not limited:
        return  # neither the tenant nor the owner has a limit: nothing to reserve against
    reserved: list[str] = []
    for scope in (scope for scope in scopes if scope in limited):
        if await _add_reserved(session, tenant=tenant, owner=scope, nbytes=nbytes):
            reserved.append(scope)
            continue
        quota = await get_quota(session, tenant=tenant, owner=scope)
        if quota is None:
            continue  # no row: this scope is unlimited
        if reserved:
            await _adjust(
                session,
                tenant=tenant,
                owners=reserved,
                values={"reserved_bytes": _clamped_decrement(Quota.reserved_bytes, nbytes)},
            )
        raise ResourceExhausted(
            "storage quota exceeded",
            reason=Reason.QUOTA_EXCEEDED,
            metadata={
                "scope": "tenant" if scope == "" else "owner",
                "limit_bytes": str(quota.limit_bytes),
                "used_bytes": str(quota.used_bytes),
                "reserved_bytes": str(quota.reserved_bytes),
                "requested_bytes": str(nbytes),
            },
        )


async def settle_quota(session: AsyncSession, *, tenant: str, owner: str, reserved: int, actual: int) -> None:
    """Turn a reservation into usage once the upload's real size is known.

    ``actual`` may exceed ``reserved`` (and push usage past the limit); the next reservation is then
    refused, which is the only enforcement point.
    """
    _check_non_negative(reserved, "reserved")
    _check_non_negative(actual, "actual")
    await _adjust(
        session,
        tenant=tenant,
        owners=_quota_scopes(owner),
        values={
            "reserved_bytes": _clamped_decrement(Quota.reserved_bytes, reserved),
            "used_bytes": Quota.used_bytes + actual,
        },
    )


async def release_quota(session: AsyncSession, *, tenant: str, owner: str, reserved: int) -> None:
    """Give back a reservation whose upload was aborted or expired."""
    _check_non_negative(reserved, "reserved")
    await _adjust(
        session,
        tenant=tenant,
        owners=_quota_scopes(owner),
        values={"reserved_bytes": _clamped_decrement(Quota.reserved_bytes, reserved)},
    )


async def refund_quota(session: AsyncSession, *, tenant: str, owner: str, nbytes: int) -> None:
    """Give back settled usage (a deleted file's bytes); :func:`transition_file` calls it on delete."""
    _check_non_negative(nbytes, "nbytes")
    await _adjust(
        session,
        tenant=tenant,
        owners=_quota_scopes(owner),
        values={"used_bytes": _clamped_decrement(Quota.used_bytes, nbytes)},
    )


# ------------------------------------------------------------------------------- idempotency


@dataclass(frozen=True, slots=True)
class IdempotentSave:
    """What :func:`save_idempotent` stored: ``replayed`` means another request got there first, and
    the caller must roll back its own work and answer ``record.response`` instead."""

    record: IdempotencyKey
    replayed: bool


def _request_id_reused(record: IdempotencyKey) -> AlreadyExists:
    return AlreadyExists(
        "request_id was already used for a different request",
        reason=Reason.REQUEST_ID_REUSED,
        metadata={"request_id": record.request_id, "method": record.method},
    )


# Answers are written once and never changed, so they are read and written as plain rows (Core, no
# identity map) and handed out as detached IdempotencyKey objects.
_IDEMPOTENCY_KEYS = IdempotencyKey.__table__
_IDEMPOTENCY_KEY = select(_IDEMPOTENCY_KEYS).where(
    _IDEMPOTENCY_KEYS.c.tenant == bindparam("tenant"),
    _IDEMPOTENCY_KEYS.c.method == bindparam("method"),
    _IDEMPOTENCY_KEYS.c.request_id == bindparam("request_id"),
)
#: INSERT ... ON CONFLICT DO NOTHING, per dialect (their Insert classes differ); a row comes back
#: only when this transaction's INSERT won.
_SAVE_IDEMPOTENT = {
    dialect.__name__.rpartition(".")[2]: dialect.insert(_IDEMPOTENCY_KEYS)
    .on_conflict_do_nothing(
        index_elements=[
            _IDEMPOTENCY_KEYS.c.tenant,
            _IDEMPOTENCY_KEYS.c.method,
            _IDEMPOTENCY_KEYS.c.request_id,
        ]
    )
    .returning(_IDEMPOTENCY_KEYS.c.request_id)
    for dialect in (postgresql, sqlite)
}


#: The width of ``idempotency_keys.method``.
_METHOD_KEY_CHARS = 255


def _method_key(method: str) -> str:
    """``method`` as stored: callers scope it by principal (``UpdateFile:<subject>``), and a subject
    may have 255 characters of its own, so a longer key keeps its start and a digest of the whole."""
    if len(method) <= _METHOD_KEY_CHARS:
        return method
    return f"{method[:128]}#sha256:{hashlib.sha256(method.encode()).hexdigest()}"


async def get_idempotent(
    session: AsyncSession, *, tenant: str, method: str, request_id: str, request_hash: str | None = None
) -> IdempotencyKey | None:
    """The stored answer for a replayed request, or ``None`` for a new one.

    With ``request_hash``, a stored request whose hash differs raises
    ``AlreadyExists(reason=Reason.REQUEST_ID_REUSED)``: the same id for a different request is a client bug.
    """
    row = (
        await session.execute(
            _IDEMPOTENCY_KEY, {"tenant": tenant, "method": _method_key(method), "request_id": request_id}
        )
    ).first()
    record = IdempotencyKey(**row._mapping) if row is not None else None
    if record is not None and request_hash is not None and record.request_hash != request_hash:
        raise _request_id_reused(record)
    return record


async def save_idempotent(
    session: AsyncSession,
    *,
    tenant: str,
    method: str,
    request_id: str,
    request_hash: str,
    response: bytes,
) -> IdempotentSave:
    """Store the answer to a request, unless a concurrent request with the same id stored one first.

    The primary key decides races: the INSERT does nothing on conflict (on PostgreSQL it first waits
    for the other transaction to finish), and the loser gets the winner's record with
    ``replayed=True``. A different ``request_hash`` raises ``AlreadyExists(reason=Reason.REQUEST_ID_REUSED)``.
    """
    _require(request_id, "request_id")
    values = {
        "tenant": tenant,
        "method": _method_key(method),
        "request_id": request_id,
        "request_hash": request_hash,
        "response": response,
        "created_at": utcnow(),
    }
    inserted = (await session.execute(_SAVE_IDEMPOTENT[_dialect(session)], values)).first()
    if inserted is not None:
        return IdempotentSave(record=IdempotencyKey(**values), replayed=False)
    existing = await get_idempotent(session, tenant=tenant, method=method, request_id=request_id)
    if existing is None:  # pragma: no cover - a conflicting row cannot vanish inside our transaction
        raise Aborted("idempotency record disappeared; retry", reason=Reason.CONCURRENT_MODIFICATION)
    if existing.request_hash != request_hash:
        raise _request_id_reused(existing)
    return IdempotentSave(record=existing, replayed=True)


async def purge_idempotency_keys(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget answers stored before ``older_than``; returns how many were dropped."""
    result = await session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at < older_than)
        .returning(IdempotencyKey.request_id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())
