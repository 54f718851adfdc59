"""What processing made of a file: its derivatives (one per kind, replaced when a step runs again) and
the latest outcome of each pipeline step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.errors import derivative_not_found
from filestore.metadata.db.models import (
    Derivative,
    File,
    FileStatus,
    ProcessingOutcome,
    ProcessingResult,
    new_id,
    utcnow,
)
from filestore.metadata.db.store._sql import _check_non_negative, _load_file, _require, _upsert

__all__ = [
    "add_derivative",
    "drop_derivative_without_object",
    "drop_parentless_derivative",
    "get_derivative",
    "get_processing_result",
    "list_derivatives",
    "list_processing_results",
    "set_processing_result",
]


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


async def _drop_derivatives(session: AsyncSession, *, file_id: str) -> list[str]:
    """Forget the file's derivatives; answers their storage keys, to be deleted after the commit."""
    dropped = await session.scalars(
        delete(Derivative)
        .where(Derivative.file_id == file_id)
        .returning(Derivative.storage_key)
        .execution_options(synchronize_session=False)
    )
    return list(dropped.all())


async def _clear_processing_results(session: AsyncSession, *, file_id: str) -> None:
    """Forget every step's outcome for the file, so that the pipeline runs each step again."""
    await session.execute(
        delete(ProcessingResult)
        .where(ProcessingResult.file_id == file_id)
        .execution_options(synchronize_session=False)
    )


# ------------------------------------------------------------------- the reconciler's repairs


async def drop_parentless_derivative(session: AsyncSession, *, derivative_id: str) -> str | None:
    """Forget the derivative if its file is DELETED or has no row; answers its storage key (to be
    deleted after the commit, unless a record has it), ``None`` when the row is gone or its file live.

    For the reconciler: a deletion drops a file's derivatives in its own transaction, but the processor
    may record one for a file being deleted meanwhile. Derivatives are regenerable and nobody can read
    them through a deleted file, so they go.
    """
    parent_is_live = (
        select(File.id).where(File.id == Derivative.file_id, File.status != FileStatus.DELETED).exists()
    )
    dropped: str | None = await session.scalar(
        delete(Derivative)
        .where(Derivative.id == derivative_id, ~parent_is_live)
        .returning(Derivative.storage_key)
        .execution_options(synchronize_session=False)
    )
    return dropped


async def drop_derivative_without_object(
    session: AsyncSession, *, derivative_id: str, storage_key: str
) -> bool:
    """Forget the derivative whose object storage lost, if the row still names ``storage_key``; whether
    it did.

    For the reconciler: a row without its bytes points readers at nothing, and derivatives are
    regenerable (processing the file again makes them anew).
    """
    dropped = await session.scalar(
        delete(Derivative)
        .where(Derivative.id == derivative_id, Derivative.storage_key == storage_key)
        .returning(Derivative.id)
        .execution_options(synchronize_session=False)
    )
    return dropped is not None
