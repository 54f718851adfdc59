"""``filestore-fsck``: the reconciler. Compares the catalogue with storage and reports (or, with
``--repair``, fixes) every place where the two disagree.

What it looks for, and what ``--repair`` does about it:

``orphan_object``
    An object under ``originals/`` or ``derivatives/`` that no record needs: no live file, no blob and
    no derivative row has its key. Deleted.
``orphan_derivative``
    A derivative whose parent file is gone (DELETED, or no row at all): the derivative row and its
    object, or an object under ``derivatives/`` whose file is gone. Deleted; derivatives are regenerable.
``missing_object``
    A record whose bytes are not in storage. A file that is UPLOADED, PROCESSING or READY becomes
    FAILED with ``status_reason`` ``OBJECT_MISSING``: the record stays (the owner still sees the file,
    and why it cannot be downloaded; deleting it refunds the quota as usual), and nothing serves a URL
    to bytes that are not there. A blob row is deleted, so it stops being a dedup target (new uploads
    of the same content would otherwise share the lost bytes). A derivative row of a live file is
    deleted. PENDING files have no bytes yet; QUARANTINED and FAILED files are never served and their
    bytes may have been removed on purpose, so neither is checked.
``stale_multipart_upload``
    A multipart upload open in storage that no OPEN upload record owns (no record, or one already
    completed, aborted or expired). Aborted, which frees its parts. OPEN records, even expired ones,
    belong to the broker's reaper, which also releases their quota.
``refcount_drift``
    A blob whose ``ref_count`` differs from the number of live files pointing at it. Recomputed; a blob
    no live file points at is forgotten and its object deleted, as deleting its last file would have.

Safe while the stack is serving:

* A grace period (``FILESTORE_FSCK_GRACE_S``, default one hour) hides objects and multipart uploads
  younger than it: the processor writes a derivative's object before its row, and the broker starts a
  multipart upload in storage before it records the upload's id.
* Every repair re-checks its finding right before acting, in a fresh transaction that re-reads the rows
  and makes the change conditional on them; storage is asked again too. A finding that no longer holds
  is reported as ``resolved`` and left alone. Repairs are idempotent: a second run finds nothing to do.
* An object is deleted only after a check over every file, blob and derivative row that none of them
  has its key. Keys are built from fresh ids, so once no record needs a key, none can need it later.
* No database transaction is held across a storage call, and both sides are read in pages.

Exit status: 0 when nothing is wrong (or ``--repair`` fixed everything), 1 when findings remain,
2 when the check could not run (usage, configuration, database or storage unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, TextIO, TypeAlias

from sqlalchemy import ColumnElement, Row, Select, delete, func, or_, select, union, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.env import PREFIX, Env, SettingsError
from filestore.core.errors import Unavailable
from filestore.core.identity import is_tenant
from filestore.core.keys import KeyKind, StorageKey, key_prefix, parse_key
from filestore.metadata.db.engine import create_engine, session_factory
from filestore.metadata.db.models import (
    Blob,
    Derivative,
    File,
    FileStatus,
    Upload,
    UploadState,
    utcnow,
)
from filestore.metadata.settings import database_url_from_env
from filestore.server.metrics import RECONCILER_FINDINGS, RECONCILER_REPAIRS
from filestore.server.settings import S3Settings
from filestore.server.storage import ListedObject, ObjectHead, ObjectStore, OpenUpload, StoreConfig

#: A SELECT of any columns, paged by ``_pages``.
RowsQuery: TypeAlias = Select[*tuple[Any, ...]]

__all__ = [
    "DEFAULT_GRACE",
    "OBJECT_MISSING_REASON",
    "Finding",
    "FindingKind",
    "FsckError",
    "FsckOptions",
    "FsckReport",
    "FsckSettings",
    "ReconcilerStorage",
    "Resolution",
    "is_stale_multipart",
    "is_young",
    "main",
    "needs_refcount_repair",
    "reconcile",
    "run",
]

PROGRAM: Final = "filestore-fsck"
DEFAULT_GRACE: Final = timedelta(hours=1)
#: ``status_reason`` of a file the reconciler found without its bytes.
OBJECT_MISSING_REASON: Final = "OBJECT_MISSING"
#: States in which a file's bytes must be in storage: the broker saw them before UPLOADED, and nothing
#: has set the file aside since.
STATES_WITH_BYTES: Final = (FileStatus.UPLOADED, FileStatus.PROCESSING, FileStatus.READY)


class FsckError(Exception):
    """The check could not run (database or storage unreachable or refusing); exit status 2."""


# ------------------------------------------------------------------------------ pure logic


def is_young(created: datetime, *, now: datetime, grace: timedelta) -> bool:
    """Whether something made at ``created`` may still be in flight (and is left alone)."""
    return created > now - grace


def is_stale_multipart(upload_id: str, records: Iterable[tuple[str | None, UploadState]]) -> bool:
    """Whether storage's multipart upload ``upload_id`` lacks an OPEN record owning it.

    ``records`` are (storage upload id, state) of the upload records of the file its key names.
    """
    return not any(storage_id == upload_id and state == UploadState.OPEN for storage_id, state in records)


def needs_refcount_repair(stored: int, live_references: int) -> bool:
    """A count that drifted, or a blob nobody references (deleting its last file would have
    forgotten it, so it must not linger as a dedup target)."""
    return stored != live_references or live_references == 0


# ---------------------------------------------------------------------------------- report


class FindingKind(enum.StrEnum):
    ORPHAN_OBJECT = "orphan_object"
    ORPHAN_DERIVATIVE = "orphan_derivative"
    MISSING_OBJECT = "missing_object"
    STALE_MULTIPART_UPLOAD = "stale_multipart_upload"
    REFCOUNT_DRIFT = "refcount_drift"


class Resolution(enum.StrEnum):
    #: Dry run: reported, nothing changed.
    FOUND = "found"
    REPAIRED = "repaired"
    #: The re-check right before repairing found that it no longer holds; nothing was changed.
    RESOLVED = "resolved"
    #: Changed since the scan (an object rewritten); left for the next run.
    SKIPPED = "skipped"
    #: The repair was attempted and failed (the note says why).
    FAILED = "failed"


Repair = Callable[[], Awaitable[tuple[Resolution, str]]]


@dataclass(slots=True, kw_only=True)
class Finding:
    kind: FindingKind
    #: The storage key concerned, or ``blob:<id>`` for a blob row.
    subject: str
    #: What ``--repair`` does (dry run) or did.
    action: str
    detail: dict[str, str] = field(default_factory=dict)
    resolution: Resolution = Resolution.FOUND
    note: str = ""
    _repair: Repair | None = field(default=None, repr=False, compare=False)

    async def repair(self) -> Resolution:
        """Re-check this finding and repair it if it still holds; sets ``resolution`` and ``note``."""
        if self._repair is None:
            return self.resolution
        try:
            self.resolution, self.note = await self._repair()
        except (Unavailable, SQLAlchemyError, OSError) as error:
            self.resolution, self.note = Resolution.FAILED, f"{type(error).__name__}: {error}"
        return self.resolution

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "subject": self.subject,
            "action": self.action,
            "detail": dict(self.detail),
            "resolution": str(self.resolution),
            "note": self.note,
        }


@dataclass(slots=True, kw_only=True)
class FsckReport:
    repair: bool
    grace_s: float
    #: Empty: every tenant.
    tenants: tuple[str, ...]
    findings: list[Finding] = field(default_factory=list)
    #: How many of each thing were looked at.
    scanned: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("objects", "files", "blobs", "derivatives", "multipart_uploads"), 0
        )
    )
    #: Objects and multipart uploads left alone because they are younger than the grace period.
    young_skipped: int = 0

    @property
    def unresolved(self) -> list[Finding]:
        return [f for f in self.findings if f.resolution not in (Resolution.REPAIRED, Resolution.RESOLVED)]

    @property
    def clean(self) -> bool:
        return not self.unresolved

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1

    def counts(self) -> dict[str, int]:
        return {str(kind): sum(1 for f in self.findings if f.kind == kind) for kind in FindingKind}

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "repair": self.repair,
            "grace_s": self.grace_s,
            "tenants": list(self.tenants),
            "scanned": dict(self.scanned),
            "young_skipped": self.young_skipped,
            "counts": self.counts(),
            "findings": [finding.to_json() for finding in self.findings],
        }

    def render_text(self) -> str:
        mode = "repair" if self.repair else "dry run"
        scope = ", ".join(self.tenants) if self.tenants else "all tenants"
        scanned = ", ".join(f"{count} {name}" for name, count in self.scanned.items())
        lines = [
            f"{PROGRAM}: {mode}, {scope}, grace {self.grace_s:g}s",
            f"scanned: {scanned}; {self.young_skipped} younger than the grace period left alone",
        ]
        for finding in self.findings:
            detail = " ".join(f"{key}={value}" for key, value in finding.detail.items())
            note = f" ({finding.note})" if finding.note else ""
            lines.append(
                f"  {finding.resolution:<9} {finding.kind:<23} {finding.subject}  {detail}"
                f"  -> {finding.action}{note}"
            )
        if not self.findings:
            lines.append("no findings: the catalogue and storage agree")
        else:
            summary = ", ".join(f"{n} {kind}" for kind, n in self.counts().items() if n)
            left = len(self.unresolved)
            lines.append(f"{len(self.findings)} findings ({summary}); {left} unresolved")
            if not self.repair:
                lines.append("run with --repair to fix them")
        return "\n".join(lines)


# --------------------------------------------------------------------------------- storage


class ReconcilerStorage(Protocol):
    """What the reconciler asks of storage (:class:`filestore.server.storage.ObjectStore` has it):
    listings, HEADs, and for repairs deletes and aborts."""

    def list_objects(self, prefix: str, *, page_size: int) -> AsyncIterator[list[ListedObject]]: ...
    def list_multipart_uploads(self, prefix: str, *, page_size: int) -> AsyncIterator[list[OpenUpload]]: ...
    async def head(self, key: str) -> ObjectHead | None: ...
    async def delete(self, key: str) -> None: ...
    async def abort_multipart(self, key: str, upload_id: str) -> bool: ...


# ------------------------------------------------------------------------------ reconciler


@dataclass(frozen=True, slots=True, kw_only=True)
class FsckOptions:
    database_url: str
    s3: S3Settings
    repair: bool = False
    grace: timedelta = DEFAULT_GRACE
    #: Only these tenants' records and keys; empty means every tenant.
    tenants: tuple[str, ...] = ()
    #: Rows or objects read per page (also bounds the ids in one ``IN (...)``).
    page_size: int = 500
    #: HEAD requests in flight at once when checking that records have their objects.
    head_concurrency: int = 16


@dataclass(frozen=True, slots=True)
class _FileFacts:
    status: FileStatus
    storage_key: str
    blob_key: str | None


def _has_prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    # substr rather than LIKE: SQLite's LIKE ignores case, and a prefix needs no escaping this way.
    return func.substr(column, 1, len(prefix)) == prefix


class _Reconciler:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], storage: ReconcilerStorage, options: FsckOptions
    ) -> None:
        self._sessions = sessions
        self._storage = storage
        self._options = options
        self._heads_at_once = asyncio.Semaphore(options.head_concurrency)
        self._now = utcnow()
        self.report = FsckReport(
            repair=options.repair, grace_s=options.grace.total_seconds(), tenants=options.tenants
        )

    async def run(self) -> FsckReport:
        # Rows first: repairing a parentless derivative or an unreferenced blob deletes its object,
        # so the object scan that follows sees the storage those repairs left.
        await self._check_derivatives_without_parents()
        await self._check_reference_counts()
        await self._check_records_have_objects()
        await self._check_objects_have_records()
        await self._check_multipart_uploads()
        return self.report

    # ---------------------------------------------------------------------------- scoping

    def _prefixes(self, kind: KeyKind) -> list[str]:
        if not self._options.tenants:
            return [key_prefix(kind)]
        return [key_prefix(kind, tenant) for tenant in self._options.tenants]

    def _tenant_is(self, column: Any) -> list[ColumnElement[bool]]:
        return [column.in_(self._options.tenants)] if self._options.tenants else []

    def _key_in_scope(self, column: Any, kind: KeyKind) -> list[ColumnElement[bool]]:
        if not self._options.tenants:
            return []
        return [or_(*(_has_prefix(column, prefix) for prefix in self._prefixes(kind)))]

    # ---------------------------------------------------------------------------- helpers

    async def _pages(self, page: Callable[[str], RowsQuery]) -> AsyncIterator[Sequence[Row[Any]]]:
        """The rows ``page(after)`` selects, ``page_size`` at a time in id order (keyset pagination:
        each page is one short transaction, and a million rows are never held at once)."""
        after = ""
        while True:
            async with self._sessions() as session, session.begin():
                rows = (await session.execute(page(after).limit(self._options.page_size))).all()
            if not rows:
                return
            after = rows[-1].id
            yield rows

    async def _settle(self, findings: list[Finding]) -> None:
        """Record a page's findings and, in repair mode, repair them one by one."""
        self.report.findings.extend(findings)
        for finding in findings:
            RECONCILER_FINDINGS.labels(str(finding.kind)).inc()
        if not self._options.repair:
            return
        for finding in findings:
            if await finding.repair() == Resolution.REPAIRED:
                RECONCILER_REPAIRS.labels(str(finding.kind)).inc()

    async def _referenced_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` any live file, any blob or any derivative row still has.

        The exhaustive check behind every object deletion: it reads the key columns themselves (which
        have no index, so it is only asked about candidates, never about every object).
        """
        if not keys:
            return set()
        wanted = list(keys)
        stmt = union(
            select(File.storage_key).where(File.storage_key.in_(wanted), File.status != FileStatus.DELETED),
            select(Blob.storage_key).where(Blob.storage_key.in_(wanted)),
            select(Derivative.storage_key).where(Derivative.storage_key.in_(wanted)),
        )
        async with self._sessions() as session, session.begin():
            return set((await session.scalars(stmt)).all())

    async def _delete_object_if_unreferenced(
        self, key: str, *, listed: ListedObject | None
    ) -> tuple[Resolution, str]:
        """Delete ``key`` unless a record has it or (when ``listed``) it changed since it was listed."""
        if await self._referenced_keys([key]):
            return Resolution.RESOLVED, "a record has the key"
        current = await self._storage.head(key)
        if current is None:
            return Resolution.RESOLVED, "object already gone"
        if listed is not None and current.etag != listed.etag:
            return Resolution.SKIPPED, "object rewritten since it was listed"
        await self._storage.delete(key)
        return Resolution.REPAIRED, "object deleted"

    # --------------------------------------------------------- derivatives without parents

    async def _check_derivatives_without_parents(self) -> None:
        def page(after: str) -> RowsQuery:
            return (
                select(
                    Derivative.id, Derivative.file_id, Derivative.kind, Derivative.storage_key, File.status
                )
                .outerjoin(File, File.id == Derivative.file_id)
                .where(
                    or_(File.id.is_(None), File.status == FileStatus.DELETED),
                    Derivative.id > after,
                    *self._key_in_scope(Derivative.storage_key, KeyKind.DERIVATIVE),
                )
                .order_by(Derivative.id)
            )

        async for rows in self._pages(page):
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
                    _repair=self._derivative_row_repair(row.id),
                )
                for row in rows
            ]
            await self._settle(findings)

    def _derivative_row_repair(self, derivative_id: str) -> Repair:
        async def repair() -> tuple[Resolution, str]:
            parent_is_live = (
                select(File.id)
                .where(File.id == Derivative.file_id, File.status != FileStatus.DELETED)
                .exists()
            )
            async with self._sessions() as session, session.begin():
                key = await session.scalar(
                    delete(Derivative)
                    .where(Derivative.id == derivative_id, ~parent_is_live)
                    .returning(Derivative.storage_key)
                    .execution_options(synchronize_session=False)
                )
            if key is None:
                return Resolution.RESOLVED, "row gone, or its parent is live"
            _, note = await self._delete_object_if_unreferenced(key, listed=None)
            return Resolution.REPAIRED, f"row deleted; {note}"

        return repair

    # ------------------------------------------------------------------- reference counts

    @staticmethod
    def _live_references(blob_id: Any) -> Select[int]:
        """How many live files point at the blob: what its ``ref_count`` must be."""
        return select(func.count(File.id)).where(File.blob_id == blob_id, File.status != FileStatus.DELETED)

    async def _check_reference_counts(self) -> None:
        def page(after: str) -> RowsQuery:
            live = self._live_references(Blob.id).scalar_subquery().correlate(Blob).label("live")
            return (
                select(Blob.id, Blob.tenant, Blob.storage_key, Blob.ref_count, live)
                .where(Blob.id > after, *self._tenant_is(Blob.tenant))
                .order_by(Blob.id)
            )

        async for rows in self._pages(page):
            self.report.scanned["blobs"] += len(rows)
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
                    _repair=self._reference_count_repair(row.id),
                )
                for row in rows
                if needs_refcount_repair(row.ref_count, row.live)
            ]
            await self._settle(findings)

    def _reference_count_repair(self, blob_id: str) -> Repair:
        async def repair() -> tuple[Resolution, str]:
            async with self._sessions() as session, session.begin():
                # Every writer of ref_count updates the blob row in the transaction that adds or
                # removes a file's reference, so holding the row lock makes the count below exact
                # (each statement reads afresh on PostgreSQL; SQLite has one writer anyway).
                locked = (
                    await session.execute(
                        select(Blob.ref_count, Blob.storage_key).where(Blob.id == blob_id).with_for_update()
                    )
                ).one_or_none()
                if locked is None:
                    return Resolution.RESOLVED, "blob gone"
                stored, key = locked
                live = int(await session.scalar(self._live_references(blob_id)) or 0)
                if not needs_refcount_repair(stored, live):
                    return Resolution.RESOLVED, f"ref_count {stored} is right"
                if live:
                    await session.execute(
                        update(Blob)
                        .where(Blob.id == blob_id)
                        .values(ref_count=live)
                        .execution_options(synchronize_session=False)
                    )
                    return Resolution.REPAIRED, f"ref_count {stored} -> {live}"
                await session.execute(
                    delete(Blob).where(Blob.id == blob_id).execution_options(synchronize_session=False)
                )
            _, note = await self._delete_object_if_unreferenced(key, listed=None)
            return Resolution.REPAIRED, f"blob forgotten; {note}"

        return repair

    # ------------------------------------------------------------ records without objects

    async def _check_records_have_objects(self) -> None:
        await self._check_files_have_objects()
        await self._check_blobs_have_objects()
        await self._check_derivatives_have_objects()

    async def _missing(self, keys: Iterable[str]) -> set[str]:
        unique = sorted(set(keys))
        heads = await asyncio.gather(*(self._head(key) for key in unique))
        return {key for key, head in zip(unique, heads, strict=True) if head is None}

    async def _head(self, key: str) -> ObjectHead | None:
        async with self._heads_at_once:
            return await self._storage.head(key)

    async def _check_files_have_objects(self) -> None:
        def page(after: str) -> RowsQuery:
            return (
                select(File.id, File.tenant, File.status, File.storage_key)
                .where(File.status.in_(STATES_WITH_BYTES), File.id > after, *self._tenant_is(File.tenant))
                .order_by(File.id)
            )

        async for rows in self._pages(page):
            self.report.scanned["files"] += len(rows)
            missing = await self._missing(row.storage_key for row in rows)
            findings = [
                Finding(
                    kind=FindingKind.MISSING_OBJECT,
                    subject=row.storage_key,
                    action=f"mark the file FAILED ({OBJECT_MISSING_REASON})",
                    detail={"record": "file", "file_id": row.id, "tenant": row.tenant, "status": row.status},
                    _repair=self._missing_file_object_repair(row.id, row.storage_key),
                )
                for row in rows
                if row.storage_key in missing
            ]
            await self._settle(findings)

    def _missing_file_object_repair(self, file_id: str, key: str) -> Repair:
        async def repair() -> tuple[Resolution, str]:
            if await self._storage.head(key) is not None:
                return Resolution.RESOLVED, "object present"
            # Outside the lifecycle table on purpose: no state a file can reach by processing says
            # "its bytes were lost", and FAILED is the one that is honest about it without losing
            # the record. The version bump makes etags held by clients stale, as any change does.
            async with self._sessions() as session, session.begin():
                failed = await session.scalar(
                    update(File)
                    .where(File.id == file_id, File.storage_key == key, File.status.in_(STATES_WITH_BYTES))
                    .values(
                        status=FileStatus.FAILED,
                        status_reason=OBJECT_MISSING_REASON,
                        version=File.version + 1,
                        updated_at=utcnow(),
                    )
                    .returning(File.id)
                    .execution_options(synchronize_session=False)
                )
            if failed is None:
                return Resolution.RESOLVED, "the file changed state meanwhile"
            return Resolution.REPAIRED, f"file FAILED ({OBJECT_MISSING_REASON})"

        return repair

    async def _check_blobs_have_objects(self) -> None:
        def page(after: str) -> RowsQuery:
            return (
                select(Blob.id, Blob.tenant, Blob.storage_key)
                .where(Blob.id > after, *self._tenant_is(Blob.tenant))
                .order_by(Blob.id)
            )

        async for rows in self._pages(page):
            missing = await self._missing(row.storage_key for row in rows)
            findings = [
                Finding(
                    kind=FindingKind.MISSING_OBJECT,
                    subject=row.storage_key,
                    action="forget the blob (it must not stay a dedup target)",
                    detail={"record": "blob", "blob_id": row.id, "tenant": row.tenant},
                    _repair=self._row_without_object_repair(Blob, row.id, row.storage_key),
                )
                for row in rows
                if row.storage_key in missing
            ]
            await self._settle(findings)

    def _row_without_object_repair(self, model: type[Blob | Derivative], row_id: str, key: str) -> Repair:
        """Delete the blob or derivative row whose object is gone, if the object is still gone and the
        row still names it. For a blob, files pointing at it keep their rows (the foreign key clears
        their blob_id); those whose bytes were the blob's are reported (and failed) on their own."""

        async def repair() -> tuple[Resolution, str]:
            if await self._storage.head(key) is not None:
                return Resolution.RESOLVED, "object present"
            async with self._sessions() as session, session.begin():
                removed = await session.scalar(
                    delete(model)
                    .where(model.id == row_id, model.storage_key == key)
                    .returning(model.id)
                    .execution_options(synchronize_session=False)
                )
            if removed is None:
                return Resolution.RESOLVED, "row gone"
            return Resolution.REPAIRED, f"{model.__tablename__} row deleted"

        return repair

    async def _check_derivatives_have_objects(self) -> None:
        def page(after: str) -> RowsQuery:
            return (
                select(Derivative.id, Derivative.file_id, Derivative.kind, Derivative.storage_key)
                .join(File, File.id == Derivative.file_id)
                .where(
                    File.status != FileStatus.DELETED, Derivative.id > after, *self._tenant_is(File.tenant)
                )
                .order_by(Derivative.id)
            )

        async for rows in self._pages(page):
            self.report.scanned["derivatives"] += len(rows)
            missing = await self._missing(row.storage_key for row in rows)
            findings = [
                Finding(
                    kind=FindingKind.MISSING_OBJECT,
                    subject=row.storage_key,
                    action="delete the derivative row",
                    detail={"record": "derivative", "file_id": row.file_id, "kind": row.kind},
                    _repair=self._row_without_object_repair(Derivative, row.id, row.storage_key),
                )
                for row in rows
                if row.storage_key in missing
            ]
            await self._settle(findings)

    # ------------------------------------------------------------ objects without records

    async def _check_objects_have_records(self) -> None:
        for kind in KeyKind:
            for prefix in self._prefixes(kind):
                async for page in self._storage.list_objects(prefix, page_size=self._options.page_size):
                    await self._check_object_page(page)

    async def _check_object_page(self, page: list[ListedObject]) -> None:
        self.report.scanned["objects"] += len(page)
        settled = [
            stored
            for stored in page
            if not is_young(stored.last_modified, now=self._now, grace=self._options.grace)
        ]
        self.report.young_skipped += len(page) - len(settled)
        owners = {stored.key: parse_key(stored.key) for stored in settled}
        files = await self._file_facts({owner.file_id for owner in owners.values() if owner is not None})
        # The cheap pass: keys are built from ids, so the rows of the file each key names (found by
        # primary key) account for nearly every object. Only the rest get the exhaustive check.
        referenced = {facts.storage_key for facts in files.values() if facts.status != FileStatus.DELETED}
        referenced |= {facts.blob_key for facts in files.values() if facts.blob_key is not None}
        referenced |= await self._derivative_keys(set(files))
        candidates = [stored for stored in settled if stored.key not in referenced]
        referenced |= await self._referenced_keys([stored.key for stored in candidates])
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
                    _repair=self._orphan_object_repair(stored),
                )
            )
        await self._settle(findings)

    async def _file_facts(self, file_ids: set[str]) -> dict[str, _FileFacts]:
        if not file_ids:
            return {}
        stmt = (
            select(File.id, File.status, File.storage_key, Blob.storage_key.label("blob_key"))
            .outerjoin(Blob, Blob.id == File.blob_id)
            .where(File.id.in_(sorted(file_ids)))
        )
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(stmt)).all()
        return {row.id: _FileFacts(row.status, row.storage_key, row.blob_key) for row in rows}

    async def _derivative_keys(self, file_ids: set[str]) -> set[str]:
        if not file_ids:
            return set()
        stmt = select(Derivative.storage_key).where(Derivative.file_id.in_(sorted(file_ids)))
        async with self._sessions() as session, session.begin():
            return set((await session.scalars(stmt)).all())

    def _orphan_object_repair(self, stored: ListedObject) -> Repair:
        async def repair() -> tuple[Resolution, str]:
            return await self._delete_object_if_unreferenced(stored.key, listed=stored)

        return repair

    # ------------------------------------------------------------------ multipart uploads

    async def _check_multipart_uploads(self) -> None:
        for prefix in self._prefixes(KeyKind.ORIGINAL):
            async for page in self._storage.list_multipart_uploads(prefix, page_size=self._options.page_size):
                await self._check_multipart_page(page)

    async def _upload_records(self, file_ids: set[str]) -> dict[str, list[tuple[str | None, UploadState]]]:
        if not file_ids:
            return {}
        stmt = select(Upload.file_id, Upload.storage_upload_id, Upload.state).where(
            Upload.file_id.in_(sorted(file_ids))
        )
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(stmt)).all()
        records: dict[str, list[tuple[str | None, UploadState]]] = {}
        for row in rows:
            records.setdefault(row.file_id, []).append((row.storage_upload_id, row.state))
        return records

    async def _check_multipart_page(self, page: list[OpenUpload]) -> None:
        self.report.scanned["multipart_uploads"] += len(page)
        settled = [
            upload
            for upload in page
            if not is_young(upload.initiated, now=self._now, grace=self._options.grace)
        ]
        self.report.young_skipped += len(page) - len(settled)
        owners = {upload.key: parse_key(upload.key) for upload in settled}
        records = await self._upload_records({o.file_id for o in owners.values() if o is not None})
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
                    _repair=self._stale_multipart_repair(upload, owner),
                )
            )
        await self._settle(findings)

    def _stale_multipart_repair(self, upload: OpenUpload, owner: StorageKey | None) -> Repair:
        async def repair() -> tuple[Resolution, str]:
            if owner is not None:
                records = await self._upload_records({owner.file_id})
                if not is_stale_multipart(upload.upload_id, records.get(owner.file_id, [])):
                    return Resolution.RESOLVED, "an OPEN upload record owns it now"
            if await self._storage.abort_multipart(upload.key, upload.upload_id):
                return Resolution.REPAIRED, "aborted"
            return Resolution.RESOLVED, "storage no longer has it"

        return repair


async def reconcile(
    sessions: async_sessionmaker[AsyncSession], storage: ReconcilerStorage, options: FsckOptions
) -> FsckReport:
    """Run the checks with sessions and a store the caller owns (see :func:`run`)."""
    try:
        return await _Reconciler(sessions, storage, options).run()
    except Unavailable as error:
        raise FsckError(f"storage: {error.message}") from error
    except (SQLAlchemyError, OSError) as error:
        raise FsckError(f"database: {error}") from error


async def run(options: FsckOptions) -> FsckReport:
    """Compare the catalogue with storage (and repair with ``options.repair``); the API behind
    ``filestore-fsck`` and ``filestore fsck``. Raises :class:`FsckError` when it cannot check."""
    engine = create_engine(options.database_url)
    try:
        store = ObjectStore(StoreConfig.from_settings(options.s3))
        return await reconcile(session_factory(engine), store, options)
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------- CLI


@dataclass(frozen=True, slots=True, kw_only=True)
class FsckSettings:
    """The metadata service's database, storage (with List, Read and Write on the bucket), grace."""

    database_url: str
    s3: S3Settings
    grace: timedelta

    @classmethod
    def from_env(cls, env: Env | None = None) -> FsckSettings:
        env = env or Env()
        grace_s = env.number(f"{PREFIX}FSCK_GRACE_S", DEFAULT_GRACE.total_seconds(), minimum=0.0)
        return cls(
            database_url=database_url_from_env(env),
            s3=S3Settings.from_env(env),
            grace=timedelta(seconds=grace_s),
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Compare the Filestore catalogue with storage: objects without records, records without "
            "objects, stale multipart uploads, drifted reference counts, derivatives without parents. "
            "Reads FILESTORE_DATABASE_URL and FILESTORE_S3_* like the services. Exit status: 0 clean "
            "(or all repaired), 1 findings remain, 2 could not check."
        ),
    )
    parser.add_argument("--repair", action="store_true", help="fix what is found (default: report only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--grace-s",
        type=float,
        metavar="SECONDS",
        help=f"leave objects and uploads younger than this alone (default: {PREFIX}FSCK_GRACE_S or "
        f"{DEFAULT_GRACE.total_seconds():g})",
    )
    parser.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="TENANT",
        help="check only this tenant (repeatable; default: all)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``filestore-fsck [--repair] [--json] [--grace-s S] [--tenant T ...]``; answers the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exited:  # argparse has printed the usage or the help
        return exited.code if isinstance(exited.code, int) else 2
    if args.grace_s is not None and args.grace_s < 0:
        print(f"{PROGRAM}: --grace-s must not be negative", file=err)
        return 2
    for tenant in args.tenant:
        if not is_tenant(tenant):
            # It names no keys: every key's tenant follows the grammar.
            print(
                f"{PROGRAM}: --tenant {tenant[:80]!r} is not a tenant ([A-Za-z0-9][A-Za-z0-9._-]{{0,62}})",
                file=err,
            )
            return 2
    try:
        settings = FsckSettings.from_env(Env(environ))
    except SettingsError as error:
        print(f"{PROGRAM}: configuration error: {error}", file=err)
        return 2
    options = FsckOptions(
        database_url=settings.database_url,
        s3=settings.s3,
        repair=args.repair,
        grace=timedelta(seconds=args.grace_s) if args.grace_s is not None else settings.grace,
        tenants=tuple(dict.fromkeys(args.tenant)),
    )
    try:
        report = asyncio.run(run(options))
    except FsckError as error:
        print(f"{PROGRAM}: could not check: {error}", file=err)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        print(report.render_text(), file=out)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
