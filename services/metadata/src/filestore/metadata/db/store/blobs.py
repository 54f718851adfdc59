"""Blobs: a tenant's verified content, one row per digest, shared by every file of the tenant that holds
those bytes (dedup) and counted by reference.

A blob knows nothing of the file lifecycle: :mod:`.files` takes a reference when it creates a dedup copy,
drops it when a file is deleted, and forgets the blob when the content at its key changed. The functions
here write a file row only to point it at its blob.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from filestore.core.errors import FailedPrecondition, NotFound
from filestore.core.reasons import Reason
from filestore.metadata.db.models import DEFAULT_STORE, Blob, File, FileStatus, new_id, utcnow
from filestore.metadata.db.store._sql import (
    Executor,
    _check_non_negative,
    _check_sha256,
    _clamped_decrement,
    _load_file,
    _require,
    _table,
    _upsert,
)

__all__ = [
    "BlobLink",
    "BlobRecount",
    "find_dedup_blob",
    "forget_blob_without_object",
    "get_blob",
    "link_file_blob",
    "live_reference_count",
    "needs_refcount_repair",
    "recount_blob_references",
    "register_blob",
]


# Core statements on the tables: a blob is read for a few columns and never changed through the ORM.
_BLOBS = _table(Blob)
_FILES = _table(File)
_BLOB_BY_ID = select(_BLOBS).where(_BLOBS.c.id == bindparam("blob_id"))
_BLOB_BY_TENANT_AND_ID = _BLOB_BY_ID.where(_BLOBS.c.tenant == bindparam("tenant"))
_DEDUP_BLOB = select(_BLOBS).where(
    _BLOBS.c.tenant == bindparam("tenant"),
    _BLOBS.c.store == bindparam("store"),
    _BLOBS.c.sha256 == bindparam("sha256"),
    _BLOBS.c.verified.is_(True),
    select(_FILES.c.id)
    .where(
        _FILES.c.blob_id == _BLOBS.c.id,
        _FILES.c.tenant == bindparam("tenant"),
        _FILES.c.owner == bindparam("owner"),
        _FILES.c.status != FileStatus.DELETED,
    )
    .exists(),
)


async def get_blob(db: Executor, *, tenant: str | None, blob_id: str) -> Row[Any]:
    """The blob as a Row of its columns."""
    blob = (
        await db.execute(
            _BLOB_BY_ID if tenant is None else _BLOB_BY_TENANT_AND_ID, {"blob_id": blob_id, "tenant": tenant}
        )
    ).first()
    if blob is None:
        raise NotFound(
            f"blob {blob_id!r} not found", reason=Reason.BLOB_NOT_FOUND, metadata={"blob_id": blob_id}
        )
    return blob


async def find_dedup_blob(
    db: Executor, *, tenant: str, owner: str, sha256: str, store: str = DEFAULT_STORE
) -> Row[Any] | None:
    """The tenant's verified blob with this digest (a Row), if ``owner`` already owns a live file of it.

    Knowing a digest is no proof of holding the content, so a blob is offered only to whoever
    already has it; everyone else uploads, and :func:`link_file_blob` shares the bytes once they
    are verified. Dedup never crosses tenants, nor stores: a file placed in ``store`` (where the
    tenant's residency allows it) shares only a blob held there.
    """
    _check_sha256(sha256)
    return (
        await db.execute(_DEDUP_BLOB, {"tenant": tenant, "owner": owner, "sha256": sha256, "store": store})
    ).first()


async def register_blob(
    session: AsyncSession,
    *,
    tenant: str,
    sha256: str,
    size: int,
    storage_key: str,
    verified: bool = True,
    store: str = DEFAULT_STORE,
) -> Blob:
    """The tenant's blob for ``sha256`` in ``store``, created if missing (``ref_count`` 0; see
    ``link_file_blob``).

    Concurrent registrations of the same digest resolve on the unique (tenant, store, sha256) constraint:
    the first storage key wins and later callers get that row. ``verified`` only ever turns on.
    """
    _require(tenant, "tenant")
    _check_sha256(sha256)
    _check_non_negative(size, "size")
    values = {
        "id": new_id(),
        "tenant": tenant,
        "store": store,
        "sha256": sha256,
        "size": size,
        "storage_key": storage_key,
        "ref_count": 0,
        "verified": verified,
        "created_at": utcnow(),
    }
    stmt = _upsert(session, Blob, values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Blob.tenant, Blob.store, Blob.sha256],
        set_={"verified": or_(Blob.verified, stmt.excluded.verified)},
    )
    blob: Blob = (
        await session.scalars(stmt.returning(Blob), execution_options={"populate_existing": True})
    ).one()
    return blob


_REFERENCE_VERIFIED_BLOB = (
    update(_BLOBS)
    .where(_BLOBS.c.id == bindparam("blob_id"), _BLOBS.c.verified.is_(True))
    .values(ref_count=_BLOBS.c.ref_count + 1)
    .returning(_BLOBS.c.id)
)


async def _reference_blob(db: Executor, *, blob_id: str) -> None:
    if (await db.execute(_REFERENCE_VERIFIED_BLOB, {"blob_id": blob_id})).first() is None:
        raise FailedPrecondition(
            "blob is not verified and cannot be shared yet",
            reason=Reason.BLOB_NOT_VERIFIED,
            metadata={"blob_id": blob_id},
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


async def _forget_blobs_at(session: AsyncSession, *, tenant: str, storage_key: str) -> None:
    """Forget the tenant's blob at ``storage_key``: the object no longer holds the verified digest."""
    await session.execute(
        delete(Blob)
        .where(Blob.tenant == tenant, Blob.storage_key == storage_key)
        .execution_options(synchronize_session=False)
    )


# ------------------------------------------------------------------- the reconciler's repairs


def live_reference_count(blob_id: Any) -> Select[int]:
    """How many live files point at the blob: what its ``ref_count`` must be. A query, so that a reader
    comparing counts (the reconciler, one page of blobs at a time) can correlate it with ``Blob.id``."""
    return select(func.count(File.id)).where(File.blob_id == blob_id, File.status != FileStatus.DELETED)


def needs_refcount_repair(stored: int, live_references: int) -> bool:
    """A count that drifted, or a blob nobody references (deleting its last file would have
    forgotten it, so it must not linger as a dedup target)."""
    return stored != live_references or live_references == 0


@dataclass(frozen=True, slots=True)
class BlobRecount:
    #: Where the blob's bytes are: once the blob is forgotten, delete the object unless a record has it.
    storage_key: str
    #: ``ref_count`` as it was.
    stored: int
    #: Live files pointing at the blob: its ``ref_count`` now, or 0 when it was forgotten.
    live: int

    @property
    def changed(self) -> bool:
        """Whether the count was set or the blob forgotten (else the count was right)."""
        return needs_refcount_repair(self.stored, self.live)

    @property
    def forgotten(self) -> bool:
        return self.live == 0


async def recount_blob_references(session: AsyncSession, *, blob_id: str) -> BlobRecount | None:
    """Set the blob's ``ref_count`` to its live files; a blob none points at is forgotten. ``None``
    when there is no such blob.

    For the reconciler, which finds counts that drifted (a crash between writes in an older version, a
    hand edit): the count is what dedup and deletion trust, so it is recomputed here, under the row
    lock, rather than corrected by the difference seen in an earlier read.
    """
    # Every writer of ref_count updates the blob row in the transaction that adds or removes a file's
    # reference, so holding the row lock makes the count below exact (each statement reads afresh on
    # PostgreSQL; SQLite has one writer anyway).
    locked = (
        await session.execute(
            select(Blob.ref_count, Blob.storage_key).where(Blob.id == blob_id).with_for_update()
        )
    ).one_or_none()
    if locked is None:
        return None
    stored, storage_key = locked
    live = int(await session.scalar(live_reference_count(blob_id)) or 0)
    recount = BlobRecount(storage_key=storage_key, stored=stored, live=live)
    if not recount.changed:
        return recount
    if recount.forgotten:
        # As deleting its last file would have done: it must not stay a dedup target.
        await session.execute(
            delete(Blob).where(Blob.id == blob_id).execution_options(synchronize_session=False)
        )
    else:
        await session.execute(
            update(Blob)
            .where(Blob.id == blob_id)
            .values(ref_count=live)
            .execution_options(synchronize_session=False)
        )
    return recount


async def forget_blob_without_object(session: AsyncSession, *, blob_id: str, storage_key: str) -> bool:
    """Forget the blob whose object storage lost, if the row still names ``storage_key``; whether it did.

    For the reconciler: a blob is a dedup target, and new uploads of the same content would otherwise
    share bytes that are gone. Files pointing at it keep their rows (the foreign key clears their
    ``blob_id``); those whose bytes were the blob's are failed on their own
    (:func:`filestore.metadata.db.store.files.fail_file_without_object`).
    """
    forgotten = await session.scalar(
        delete(Blob)
        .where(Blob.id == blob_id, Blob.storage_key == storage_key)
        .returning(Blob.id)
        .execution_options(synchronize_session=False)
    )
    return forgotten is not None
