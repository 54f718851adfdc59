"""Grants: a principal's READ or WRITE permission on one file, until revoked or expired; and the one
answer to "may this principal do this to this file" (:func:`is_permitted`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.errors import grant_not_found
from filestore.metadata.db.models import FileColumns, Grant, Permission, Visibility, new_id, utcnow
from filestore.metadata.db.store._sql import Executor, _load_file, _require, _table

__all__ = [
    "create_grant",
    "get_grant",
    "is_permitted",
    "list_grants",
    "revoke_grant",
]


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


# The table's columns rather than the entity's: is_permitted is a Core statement (see _sql.Executor).
_GRANTS = _table(Grant)


def _active_grant(now: datetime) -> ColumnElement[bool]:
    return and_(
        _GRANTS.c.revoked_at.is_(None), or_(_GRANTS.c.expires_at.is_(None), _GRANTS.c.expires_at > now)
    )


async def list_grants(
    session: AsyncSession, *, tenant: str, file_id: str, active_only: bool = True, now: datetime | None = None
) -> list[Grant]:
    await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=False)
    stmt = select(Grant).where(Grant.file_id == file_id, Grant.tenant == tenant)
    if active_only:
        stmt = stmt.where(_active_grant(now or utcnow()))
    return list((await session.scalars(stmt.order_by(Grant.created_at, Grant.id))).all())


async def is_permitted(
    db: Executor,
    *,
    file: FileColumns,
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
        select(_GRANTS.c.id)
        .where(
            _GRANTS.c.file_id == file.id,
            _GRANTS.c.tenant == file.tenant,
            _GRANTS.c.principal == principal,
            _GRANTS.c.permission.in_(sufficient),
            _active_grant(now or utcnow()),
        )
        .limit(1)
    )
    return (await db.scalar(stmt)) is not None
