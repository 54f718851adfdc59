"""The reconciler: runs the checks in order over one :class:`~filestore.metadata.fsck.scan.Scan`, with
sessions and a store the caller owns (:func:`reconcile`) or its own (:func:`run`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.errors import Unavailable
from filestore.metadata.db.engine import create_engine, session_factory
from filestore.metadata.fsck.checks.missing_objects import check_records_have_objects
from filestore.metadata.fsck.checks.missing_replicas import check_replicas_have_objects
from filestore.metadata.fsck.checks.orphan_objects import check_objects_have_records
from filestore.metadata.fsck.checks.parentless_derivatives import check_parentless_derivatives
from filestore.metadata.fsck.checks.reference_counts import check_reference_counts
from filestore.metadata.fsck.checks.stale_multiparts import check_multipart_uploads
from filestore.metadata.fsck.report import FsckReport
from filestore.metadata.fsck.scan import FsckOptions, ReconcilerStorage, Scan
from filestore.server.storage import DEFAULT_STORE, ObjectStore, StoreSet

__all__ = ["CHECKS", "FsckError", "reconcile", "run"]

#: Rows first: repairing a parentless derivative or an unreferenced blob deletes its object, so the
#: object scan that follows sees the storage those repairs left.
CHECKS: Final[tuple[Callable[[Scan], Awaitable[None]], ...]] = (
    check_parentless_derivatives,
    check_reference_counts,
    check_records_have_objects,
    check_replicas_have_objects,
    check_objects_have_records,
    check_multipart_uploads,
)
#: The checks that list a store rather than read records: run once per store.
PER_STORE: Final = frozenset({check_objects_have_records, check_multipart_uploads})


class FsckError(Exception):
    """The check could not run (database or storage unreachable or refusing); exit status 2."""


async def reconcile(
    sessions: async_sessionmaker[AsyncSession],
    storage: ReconcilerStorage,
    options: FsckOptions,
    *,
    stores: Mapping[str, ReconcilerStorage] | None = None,
) -> FsckReport:
    """Run the checks with sessions and stores the caller owns (see :func:`run`): ``storage`` is the
    store named ``default``, ``stores`` every store by name (only that one when not given)."""
    scan = Scan(sessions, storage, options, stores=stores)
    try:
        for check in CHECKS:
            if check in PER_STORE:
                async for _ in scan.each_store():
                    await check(scan)
            else:
                await check(scan)
    except Unavailable as error:
        raise FsckError(f"storage: {error.message}") from error
    except (SQLAlchemyError, OSError) as error:
        raise FsckError(f"database: {error}") from error
    return scan.report


async def run(options: FsckOptions) -> FsckReport:
    """Compare the catalogue with storage (and repair with ``options.repair``); the API behind
    ``filestore-fsck`` and ``filestore fsck``. Raises :class:`FsckError` when it cannot check."""
    engine = create_engine(options.database_url)
    try:
        configured = options.stores or StoreSet.single(options.s3)
        stores = {config.name: ObjectStore(config) for config in configured}
        return await reconcile(session_factory(engine), stores[DEFAULT_STORE], options, stores=stores)
    finally:
        await engine.dispose()
