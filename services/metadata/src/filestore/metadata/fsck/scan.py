"""What every check shares: the options, the catalogue and the store it compares, the report it adds
to, and the mechanisms each check would otherwise repeat (scoping to tenants, reading rows in pages,
leaving young things alone, HEADs in bounded parallel, settling a page of findings, and the exhaustive
check that comes before any object is deleted).

The reconciler reads the catalogue here and in the checks; it writes it only through
:mod:`filestore.metadata.db.store`. It reaches storage only through :class:`ReconcilerStorage`, which
:class:`filestore.server.storage.ObjectStore` has.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, TypeAlias, TypeVar

from sqlalchemy import ColumnElement, Row, Select, or_, select, union
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.keys import KeyKind, key_prefix
from filestore.metadata.db.models import Blob, Derivative, File, FileStatus, utcnow
from filestore.metadata.db.store import has_prefix
from filestore.metadata.fsck.report import Finding, FsckReport, Resolution
from filestore.server.metrics import RECONCILER_FINDINGS, RECONCILER_REPAIRS
from filestore.server.settings import S3Settings
from filestore.server.storage import (
    DEFAULT_STORE,
    ListedObject,
    ObjectHead,
    ObjectStore,
    OpenUpload,
    StoreSet,
)

__all__ = ["DEFAULT_GRACE", "FsckOptions", "ReconcilerStorage", "RowsQuery", "Scan", "is_young"]

DEFAULT_GRACE: Final = timedelta(hours=1)

#: A SELECT of any columns, paged by :meth:`Scan.pages`.
RowsQuery: TypeAlias = Select[*tuple[Any, ...]]

_Item = TypeVar("_Item")


class ReconcilerStorage(Protocol):
    """What the reconciler asks of storage (:class:`filestore.server.storage.ObjectStore` has it):
    listings, HEADs, and for repairs deletes and aborts."""

    def list_objects(self, prefix: str, *, page_size: int) -> AsyncIterator[list[ListedObject]]: ...
    def list_multipart_uploads(self, prefix: str, *, page_size: int) -> AsyncIterator[list[OpenUpload]]: ...
    async def head(self, key: str) -> ObjectHead | None: ...
    async def delete(self, key: str) -> None: ...
    async def abort_multipart(self, key: str, upload_id: str) -> bool: ...
    async def copy_from(self, source: ObjectStore, key: str) -> ObjectHead: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FsckOptions:
    database_url: str
    s3: S3Settings
    #: Every store (``s3``'s, named ``default``, and ``FILESTORE_STORES``'); only ``s3``'s when None.
    stores: StoreSet | None = None
    repair: bool = False
    grace: timedelta = DEFAULT_GRACE
    #: Only these tenants' records and keys; empty means every tenant.
    tenants: tuple[str, ...] = ()
    #: Rows or objects read per page (also bounds the ids in one ``IN (...)``).
    page_size: int = 500
    #: HEAD requests in flight at once when checking that records have their objects.
    head_concurrency: int = 16


def is_young(created: datetime, *, now: datetime, grace: timedelta) -> bool:
    """Whether something made at ``created`` may still be in flight (and is left alone)."""
    return created > now - grace


class Scan:
    """One run of the reconciler: what it compares, with which options, and the report it fills."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        storage: ReconcilerStorage,
        options: FsckOptions,
        *,
        stores: Mapping[str, ReconcilerStorage] | None = None,
    ) -> None:
        self.sessions = sessions
        #: The store the per-store checks (orphans, multipart uploads) are looking at now.
        self.storage = storage
        #: Every store by name; records are checked in the store they name.
        self.stores: dict[str, ReconcilerStorage] = dict(stores) if stores else {DEFAULT_STORE: storage}
        self.options = options
        self.now = utcnow()
        self.report = FsckReport(
            repair=options.repair, grace_s=options.grace.total_seconds(), tenants=options.tenants
        )
        self._heads_at_once = asyncio.Semaphore(options.head_concurrency)

    # ---------------------------------------------------------------------------- scoping

    def prefixes(self, kind: KeyKind) -> list[str]:
        """The key prefixes of ``kind`` in scope: one per tenant asked for, or the whole area."""
        if not self.options.tenants:
            return [key_prefix(kind)]
        return [key_prefix(kind, tenant) for tenant in self.options.tenants]

    def tenant_is(self, column: Any) -> list[ColumnElement[bool]]:
        """Conditions keeping rows whose tenant ``column`` is in scope (none: every tenant)."""
        return [column.in_(self.options.tenants)] if self.options.tenants else []

    def key_in_scope(self, column: Any, kind: KeyKind) -> list[ColumnElement[bool]]:
        """Conditions keeping rows whose storage key ``column`` is in scope, for rows that name no tenant."""
        if not self.options.tenants:
            return []
        return [or_(*(has_prefix(column, prefix) for prefix in self.prefixes(kind)))]

    def leave_young(self, items: Sequence[_Item], made_at: Callable[[_Item], datetime]) -> list[_Item]:
        """The ``items`` older than the grace period; the others are counted as left alone."""
        settled = [
            item for item in items if not is_young(made_at(item), now=self.now, grace=self.options.grace)
        ]
        self.report.young_skipped += len(items) - len(settled)
        return settled

    # ---------------------------------------------------------------------- the catalogue

    async def pages(self, page: Callable[[str], RowsQuery]) -> AsyncIterator[Sequence[Row[Any]]]:
        """The rows ``page(after)`` selects, ``page_size`` at a time in id order (keyset pagination:
        each page is one short transaction, and a million rows are never held at once)."""
        after = ""
        while True:
            async with self.sessions() as session, session.begin():
                rows = (await session.execute(page(after).limit(self.options.page_size))).all()
            if not rows:
                return
            after = rows[-1].id
            yield rows

    async def referenced_keys(self, keys: Sequence[str]) -> set[str]:
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
        async with self.sessions() as session, session.begin():
            return set((await session.scalars(stmt)).all())

    # ---------------------------------------------------------------------------- storage

    async def each_store(self) -> AsyncIterator[str]:
        """Each store's name in turn, with :attr:`storage` set to it (for the checks that list a
        store: objects without records, multipart uploads left open)."""
        first = self.storage
        try:
            for name, storage in self.stores.items():
                self.storage = storage
                yield name
        finally:
            self.storage = first

    def store(self, name: str) -> ReconcilerStorage | None:
        """The store a record names (empty: ``default``); None when this run does not configure it."""
        return self.stores.get(name or DEFAULT_STORE)

    async def missing(self, keys: Iterable[str], *, store: str = DEFAULT_STORE) -> set[str]:
        """Which of ``keys`` the store ``store`` has no object for (HEADs in parallel, a bounded
        number at once). A store this run does not configure is not checked: nothing is missing."""
        storage = self.store(store)
        if storage is None:
            return set()
        unique = sorted(set(keys))
        heads = await asyncio.gather(*(self._head(storage, key) for key in unique))
        return {key for key, head in zip(unique, heads, strict=True) if head is None}

    async def _head(self, storage: ReconcilerStorage, key: str) -> ObjectHead | None:
        async with self._heads_at_once:
            return await storage.head(key)

    async def delete_object_if_unreferenced(
        self, key: str, *, listed: ListedObject | None
    ) -> tuple[Resolution, str]:
        """Delete ``key`` unless a record has it or (when ``listed``) it changed since it was listed."""
        if await self.referenced_keys([key]):
            return Resolution.RESOLVED, "a record has the key"
        current = await self.storage.head(key)
        if current is None:
            return Resolution.RESOLVED, "object already gone"
        if listed is not None and current.etag != listed.etag:
            return Resolution.SKIPPED, "object rewritten since it was listed"
        await self.storage.delete(key)
        return Resolution.REPAIRED, "object deleted"

    # ---------------------------------------------------------------------------- findings

    async def settle(self, findings: list[Finding]) -> None:
        """Record a page's findings and, in repair mode, repair them one by one."""
        self.report.findings.extend(findings)
        for finding in findings:
            RECONCILER_FINDINGS.labels(str(finding.kind)).inc()
        if not self.options.repair:
            return
        for finding in findings:
            if await finding.repair() == Resolution.REPAIRED:
                RECONCILER_REPAIRS.labels(str(finding.kind)).inc()
