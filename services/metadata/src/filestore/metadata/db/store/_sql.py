"""What the store's resource modules share: checks of declared values, dialect and statement
helpers, the compare-and-set budget, and the tenant-scoped file lookup that most operations start with.

Private to :mod:`filestore.metadata.db.store`: these names keep their leading underscore because they
are no part of the store's face, only of its modules'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, bindparam, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from filestore.core.errors import InvalidArgument, file_not_found
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_NAME_CHARS
from filestore.metadata.db.models import Base, File, FileStatus, FileValues, UploadValues

#: Where a statement runs: an ORM session, or a plain connection for the RPCs that need nothing of the
#: ORM (see :mod:`filestore.metadata.servicer.unit_of_work`). Functions taking an ``Executor`` run
#: Core statements only (tables and columns, rows back), which behave the same on both.
Executor = AsyncSession | AsyncConnection


@dataclass(frozen=True, slots=True)
class KeysetCursor:
    """Position after the last row of a page listed newest first (``created_at``, then ``id``): the
    next page starts below it. The servicer turns it into an opaque signed page token."""

    created_at: datetime
    id: str


#: Compare-and-set attempts before giving up with ``Aborted``; each failed attempt means another
#: transaction changed the row in between, so more than a handful means a hot row, not bad luck.
_CAS_ATTEMPTS = 8
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def has_prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, case-sensitively on every backend. Public (re-exported by the
    store) because the reconciler's reads select by key prefix too."""
    # substr rather than LIKE: SQLite's LIKE ignores case, and a prefix needs no escaping this way.
    return func.substr(column, 1, len(prefix)) == prefix


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


def _dialect(db: Executor) -> str:
    if isinstance(db, AsyncConnection):
        return db.dialect.name
    return db.get_bind().dialect.name


def _clamped_decrement(column: Any, amount: int) -> ColumnElement[int]:
    """``max(column - amount, 0)`` in portable SQL: releasing twice must not drive a counter negative."""
    return case((column >= amount, column - amount), else_=0)


# The hot paths (BeginUpload, GetUploadRecord, AuthorizeRead, idempotency) run statements built once
# at import with bind parameters: building a statement and its cache key costs more than executing
# it. Every ORM read takes ``populate_existing``: a retry after a lost compare-and-set must see the
# row as it is now, not the copy the session loaded before.
_FRESH = {"populate_existing": True}


def _values_of(record: FileValues | UploadValues) -> dict[str, Any]:
    """A record's fields as the parameters of its INSERT (its fields are its table's columns)."""
    return {field.name: getattr(record, field.name) for field in fields(record)}


def _upsert(session: AsyncSession, model: type[Any], values: Mapping[str, Any]) -> Any:
    """A dialect INSERT for ``model`` with ``.on_conflict_do_update`` available (both dialects
    spell it the same way); typed loosely because the two dialects' Insert classes are unrelated."""
    if _dialect(session) == "postgresql":
        return postgresql.insert(model).values(dict(values))
    return sqlite.insert(model).values(dict(values))


def _table(model: type[Base]) -> Table:
    """The model's table, typed as one (the ORM types ``__table__`` as any FROM clause)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model here is mapped to a Table
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


_FILES = _table(File)


def _file_conditions(*, by_tenant: bool, include_deleted: bool) -> list[ColumnElement[bool]]:
    # On the table's columns, not the entity's attributes: those would make the Core statements
    # below ORM statements, compiled and run through the ORM's machinery.
    conditions = [_FILES.c.id == bindparam("file_id")]
    if by_tenant:
        conditions.append(_FILES.c.tenant == bindparam("tenant"))
    if not include_deleted:
        conditions.append(_FILES.c.status != FileStatus.DELETED)
    return conditions


_SCOPES = [(by_tenant, include_deleted) for by_tenant in (False, True) for include_deleted in (False, True)]
#: The lifecycle's reads, as ORM objects: its compare-and-set UPDATEs answer entities too.
_FILE_LOOKUPS = {
    (by_tenant, include_deleted): select(File)
    .where(*_file_conditions(by_tenant=by_tenant, include_deleted=include_deleted))
    .execution_options(**_FRESH)
    for by_tenant, include_deleted in _SCOPES
}
#: Every other read, as Core statements on the table: a Row of every column, no ORM object made.
_FILE_ROWS = {
    (by_tenant, include_deleted): select(_FILES).where(
        *_file_conditions(by_tenant=by_tenant, include_deleted=include_deleted)
    )
    for by_tenant, include_deleted in _SCOPES
}


async def _file_row(db: Executor, *, tenant: str | None, file_id: str, include_deleted: bool) -> Row[Any]:
    """The file as a Core Row (its columns by name); ``tenant=None`` looks in every tenant."""
    found: Row[Any] | None = (
        await db.execute(
            _FILE_ROWS[tenant is not None, include_deleted], {"file_id": file_id, "tenant": tenant}
        )
    ).first()
    if found is None:
        raise file_not_found(file_id)
    return found


async def _load_file(
    session: AsyncSession, *, tenant: str | None, file_id: str, include_deleted: bool
) -> File:
    found = await session.scalar(
        _FILE_LOOKUPS[tenant is not None, include_deleted], {"file_id": file_id, "tenant": tenant}
    )
    if found is None:
        raise file_not_found(file_id)
    return found
