"""Idempotency keys: the first answer to a request, stored under (tenant, method, request_id) so that a
replay answers it again (AIP-155); the unique key decides races between concurrent twins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.errors import Aborted, AlreadyExists
from filestore.core.reasons import Reason
from filestore.metadata.db.models import IdempotencyKey, utcnow
from filestore.metadata.db.store._sql import Executor, _dialect, _require, _table

__all__ = [
    "IdempotentSave",
    "get_idempotent",
    "purge_idempotency_keys",
    "save_idempotent",
]


@dataclass(frozen=True, slots=True)
class IdempotentSave:
    """What :func:`save_idempotent` did: ``replayed`` means another request got there first, and the
    caller must roll back its own work and answer ``response`` (that request's) instead."""

    response: bytes
    replayed: bool


def _request_id_reused(record: Row[Any]) -> AlreadyExists:
    return AlreadyExists(
        "request_id was already used for a different request",
        reason=Reason.REQUEST_ID_REUSED,
        metadata={"request_id": record.request_id, "method": record.method},
    )


# Answers are written once and never changed, so they are read and written as plain rows (Core).
_IDEMPOTENCY_KEYS = _table(IdempotencyKey)
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
    db: Executor, *, tenant: str, method: str, request_id: str, request_hash: str | None = None
) -> Row[Any] | None:
    """The stored answer for a replayed request (a Row of ``idempotency_keys``), or ``None`` for a
    new one.

    With ``request_hash``, a stored request whose hash differs raises
    ``AlreadyExists(reason=Reason.REQUEST_ID_REUSED)``: the same id for a different request is a client bug.
    """
    record = (
        await db.execute(
            _IDEMPOTENCY_KEY, {"tenant": tenant, "method": _method_key(method), "request_id": request_id}
        )
    ).first()
    if record is not None and request_hash is not None and record.request_hash != request_hash:
        raise _request_id_reused(record)
    return record


async def save_idempotent(
    db: Executor,
    *,
    tenant: str,
    method: str,
    request_id: str,
    request_hash: str,
    response: bytes,
) -> IdempotentSave:
    """Store the answer to a request, unless a concurrent request with the same id stored one first.

    The primary key decides races: the INSERT does nothing on conflict (on PostgreSQL it first waits
    for the other transaction to finish), and the loser gets the winner's answer with
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
    inserted = (await db.execute(_SAVE_IDEMPOTENT[_dialect(db)], values)).first()
    if inserted is not None:
        return IdempotentSave(response=response, replayed=False)
    existing = await get_idempotent(db, tenant=tenant, method=method, request_id=request_id)
    if existing is None:  # pragma: no cover - a conflicting row cannot vanish inside our transaction
        raise Aborted("idempotency record disappeared; retry", reason=Reason.CONCURRENT_MODIFICATION)
    if existing.request_hash != request_hash:
        raise _request_id_reused(existing)
    return IdempotentSave(response=existing.response, replayed=True)


async def purge_idempotency_keys(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget answers stored before ``older_than``; returns how many were dropped."""
    result = await session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at < older_than)
        .returning(IdempotencyKey.request_id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())
