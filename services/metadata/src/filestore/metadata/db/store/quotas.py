"""Quotas: limits on stored bytes, reserved when an upload begins, settled when it completes, released
when it ends otherwise, refunded when a file is deleted.

A quota row limits a tenant (owner "") or one owner inside a tenant; an upload must fit both. A
tenant or owner without a row is unlimited: quotas are opt-in, and a fresh deployment works before
anyone has configured one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.errors import ResourceExhausted
from filestore.core.reasons import Reason
from filestore.metadata.db.models import Quota, new_id
from filestore.metadata.db.store._sql import (
    Executor,
    _check_non_negative,
    _clamped_decrement,
    _require,
    _table,
    _upsert,
)

__all__ = [
    "get_quota",
    "refund_quota",
    "release_quota",
    "reserve_quota",
    "set_quota",
    "settle_quota",
]


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


# Core statements on the table: quotas are changed by conditional UPDATEs only, never through the ORM.
_QUOTAS = _table(Quota)
_QUOTA = select(_QUOTAS).where(_QUOTAS.c.tenant == bindparam("tenant"), _QUOTAS.c.owner == bindparam("owner"))


async def get_quota(db: Executor, *, tenant: str, owner: str = "") -> Row[Any] | None:
    """The quota of a tenant (``owner=""``) or owner as a Row of its columns; ``None``: unlimited."""
    return (await db.execute(_QUOTA, {"tenant": tenant, "owner": owner})).first()


_QUOTA_SCOPES_WITH_LIMITS = select(_QUOTAS.c.owner).where(
    _QUOTAS.c.tenant == bindparam("tenant"), _QUOTAS.c.owner.in_(bindparam("scopes", expanding=True))
)
_RESERVE_IF_IT_FITS = (
    update(_QUOTAS)
    .where(
        # Not named after columns: an UPDATE reserves those names for its SET clause.
        _QUOTAS.c.tenant == bindparam("quota_tenant"),
        _QUOTAS.c.owner == bindparam("quota_owner"),
        _QUOTAS.c.used_bytes + _QUOTAS.c.reserved_bytes + bindparam("nbytes") <= _QUOTAS.c.limit_bytes,
    )
    .values(reserved_bytes=_QUOTAS.c.reserved_bytes + bindparam("nbytes"))
    .returning(_QUOTAS.c.id)
)


async def _add_reserved(db: Executor, *, tenant: str, owner: str, nbytes: int) -> bool:
    """Reserve under one quota row in a single conditional UPDATE; False if it does not fit."""
    result = await db.execute(
        _RESERVE_IF_IT_FITS, {"quota_tenant": tenant, "quota_owner": owner, "nbytes": nbytes}
    )
    return result.first() is not None


async def _adjust(db: Executor, *, tenant: str, owners: Iterable[str], values: dict[str, Any]) -> None:
    await db.execute(
        update(_QUOTAS).where(_QUOTAS.c.tenant == tenant, _QUOTAS.c.owner.in_(list(owners))).values(**values)
    )


async def reserve_quota(db: Executor, *, tenant: str, owner: str, nbytes: int) -> None:
    """Reserve ``nbytes`` against the tenant's and the owner's quota, atomically per row.

    Raises ``ResourceExhausted(reason=Reason.QUOTA_EXCEEDED)`` (metadata names the scope and the numbers)
    when either quota would be exceeded; no reservation is then left behind, even if the caller
    goes on to commit.
    """
    _check_non_negative(nbytes, "nbytes")
    scopes = _quota_scopes(owner)
    limited = set((await db.scalars(_QUOTA_SCOPES_WITH_LIMITS, {"tenant": tenant, "scopes": scopes})).all())
    if not limited:
        return  # neither the tenant nor the owner has a limit: nothing to reserve against
    reserved: list[str] = []
    for scope in (scope for scope in scopes if scope in limited):
        if await _add_reserved(db, tenant=tenant, owner=scope, nbytes=nbytes):
            reserved.append(scope)
            continue
        quota = await get_quota(db, tenant=tenant, owner=scope)
        if quota is None:
            continue  # no row: this scope is unlimited
        if reserved:
            await _adjust(
                db,
                tenant=tenant,
                owners=reserved,
                values={"reserved_bytes": _clamped_decrement(_QUOTAS.c.reserved_bytes, nbytes)},
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
            "reserved_bytes": _clamped_decrement(_QUOTAS.c.reserved_bytes, reserved),
            "used_bytes": _QUOTAS.c.used_bytes + actual,
        },
    )


async def release_quota(session: AsyncSession, *, tenant: str, owner: str, reserved: int) -> None:
    """Give back a reservation whose upload was aborted or expired."""
    _check_non_negative(reserved, "reserved")
    await _adjust(
        session,
        tenant=tenant,
        owners=_quota_scopes(owner),
        values={"reserved_bytes": _clamped_decrement(_QUOTAS.c.reserved_bytes, reserved)},
    )


async def refund_quota(session: AsyncSession, *, tenant: str, owner: str, nbytes: int) -> None:
    """Give back settled usage (a deleted file's bytes); :func:`transition_file` calls it on delete."""
    _check_non_negative(nbytes, "nbytes")
    await _adjust(
        session,
        tenant=tenant,
        owners=_quota_scopes(owner),
        values={"used_bytes": _clamped_decrement(_QUOTAS.c.used_bytes, nbytes)},
    )
