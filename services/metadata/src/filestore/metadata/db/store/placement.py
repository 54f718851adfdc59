"""Where a tenant's bytes may live and where copies of them are: tenants' residency policies and
files' replicas.

Residency is enforced here, the one writer of the catalogue: :func:`choose_store` picks a file's store
from what the broker offers, :func:`record_replica` refuses a copy outside the residency, and dedup
(:mod:`.blobs`) never crosses stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.errors import FailedPrecondition
from filestore.core.reasons import Reason
from filestore.metadata.db.models import File, Replica, ReplicaState, TenantPolicy, new_id, utcnow
from filestore.metadata.db.store._sql import Executor, _require, _upsert

__all__ = [
    "Residency",
    "choose_store",
    "get_residency",
    "list_replicas",
    "mark_replica_missing",
    "record_replica",
    "set_residency",
]


@dataclass(frozen=True, slots=True)
class Residency:
    """A tenant's policy: ``allowed_stores`` empty means every configured store."""

    tenant: str
    allowed_stores: tuple[str, ...] = ()
    replicate: bool = False

    def allows(self, store: str) -> bool:
        return not self.allowed_stores or store in self.allowed_stores


async def get_residency(db: Executor, *, tenant: str) -> Residency:
    """The tenant's policy; a tenant without one may use any store and is not replicated."""
    row = (
        await db.execute(
            select(TenantPolicy.allowed_stores, TenantPolicy.replicate).where(TenantPolicy.tenant == tenant)
        )
    ).first()
    if row is None:
        return Residency(tenant=tenant)
    return Residency(tenant=tenant, allowed_stores=tuple(row.allowed_stores or ()), replicate=row.replicate)


async def set_residency(
    session: AsyncSession, *, tenant: str, allowed_stores: Sequence[str], replicate: bool
) -> Residency:
    """Replace the tenant's policy. Files already stored stay where they are (a residency that
    excludes them is the operator's to act on); new uploads, replicas and dedup follow it at once."""
    _require(tenant, "tenant")
    stores = sorted(set(allowed_stores))
    values = {"tenant": tenant, "allowed_stores": stores, "replicate": replicate, "updated_at": utcnow()}
    stmt = _upsert(session, TenantPolicy, values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[TenantPolicy.tenant],
            set_={"allowed_stores": stmt.excluded.allowed_stores, "replicate": stmt.excluded.replicate,
                  "updated_at": stmt.excluded.updated_at},
        )
    )  # fmt: skip
    return Residency(tenant=tenant, allowed_stores=tuple(stores), replicate=replicate)


async def choose_store(db: Executor, *, tenant: str, offered: Sequence[str], default: str) -> str:
    """The first of ``offered`` (the broker's stores, nearest first) the tenant's residency allows;
    ``default`` when nothing is offered (a caller from before there were several stores) and it is
    allowed. None allowed is ``FailedPrecondition`` ``RESIDENCY_VIOLATION``: no URL is ever signed
    for a store outside the residency."""
    residency = await get_residency(db, tenant=tenant)
    for store in offered or (default,):
        if residency.allows(store):
            return store
    raise FailedPrecondition(
        "the tenant's residency allows none of the stores offered",
        reason=Reason.RESIDENCY_VIOLATION,
        metadata={"tenant": tenant},
    )


#: A replica as :func:`list_replicas` reads it: file id, store, state.
ReplicaRow: TypeAlias = Row[str, str, ReplicaState]


async def list_replicas(db: Executor, *, file_ids: Sequence[str]) -> dict[str, list[ReplicaRow]]:
    """Every replica of these files (rows of file_id, store, state), by file id, in store order.
    Core columns, so that it reads on a plain connection as on a session."""
    replicas: dict[str, list[ReplicaRow]] = {file_id: [] for file_id in file_ids}
    if not file_ids:
        return replicas
    rows = await db.execute(
        select(Replica.file_id, Replica.store, Replica.state)
        .where(Replica.file_id.in_(list(file_ids)))
        .order_by(Replica.store)
    )
    for row in rows:
        replicas[row.file_id].append(row)
    return replicas


async def record_replica(session: AsyncSession, *, file: File, store: str, state: ReplicaState) -> Replica:
    """Record (or update) the file's copy in ``store``, at the file's own key. A store the tenant's
    residency excludes, or the file's own, is refused."""
    if store == file.store:
        raise FailedPrecondition(
            "a file's own store holds its original, not a replica",
            reason=Reason.UNKNOWN_STORE,
            metadata={"store": store},
        )
    residency = await get_residency(session, tenant=file.tenant)
    if not residency.allows(store):
        raise FailedPrecondition(
            "the tenant's residency excludes this store",
            reason=Reason.RESIDENCY_VIOLATION,
            metadata={"tenant": file.tenant, "store": store},
        )
    now = utcnow()
    values = {
        "id": new_id(),
        "file_id": file.id,
        "store": store,
        "storage_key": file.storage_key,
        "state": state,
        "created_at": now,
        "updated_at": now,
    }
    stmt = _upsert(session, Replica, values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Replica.file_id, Replica.store],
        set_={"state": stmt.excluded.state, "storage_key": stmt.excluded.storage_key, "updated_at": now},
    )
    replica: Replica = (
        await session.scalars(stmt.returning(Replica), execution_options={"populate_existing": True})
    ).one()
    return replica


async def mark_replica_missing(session: AsyncSession, *, replica_id: str) -> bool:
    """The reconciler found a READY replica's object gone: it becomes MISSING (to be copied again)."""
    result = await session.execute(
        update(Replica)
        .where(Replica.id == replica_id, Replica.state == ReplicaState.READY)
        .values(state=ReplicaState.MISSING, updated_at=utcnow())
        .returning(Replica.id)
    )
    return result.first() is not None
