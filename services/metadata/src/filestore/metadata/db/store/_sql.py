"""What the store's resource modules share: checks of declared values, dialect and statement
helpers, the compare-and-set budget, and the tenant-scoped file lookup that most operations start with.

Private to :mod:`filestore.metadata.db.store`: these names keep their leading underscore because they
are no part of the store's face, only of its modules'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Insert, Select, bindparam, case, func, insert, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from filestore.core.errors import InvalidArgument, file_not_found
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_NAME_CHARS
from filestore.metadata.db.models import File, FileStatus

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


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _clamped_decrement(column: Any, amount: int) -> ColumnElement[int]:
    """``max(column - amount, 0)`` in portable SQL: releasing twice must not drive a counter negative."""
    return case((column >= amount, column - amount), else_=0)


# The hot paths (BeginUpload, GetUploadRecord, AuthorizeRead, idempotency) run statements built once
# here with bind parameters: building a statement and its cache key costs more than executing it.
# Every read also takes ``populate_existing``: a retry after a lost compare-and-set must see the row
# as it is now, not the copy the session loaded before.
_FRESH = {"populate_existing": True}
_INSERTS: dict[type[Any], Insert] = {}


async def _insert_loaded(session: AsyncSession, row: Any) -> None:
    """INSERT ``row`` (every column set) with one statement and attach it to the session as a loaded,
    persistent object, without the unit of work's flush (several times the cost of the INSERT).

    For rows written once and read back in the same transaction; later changes go through the
    usual UPDATEs.
    """
    model = type(row)
    statement = _INSERTS.get(model)
    if statement is None:
        # Of the table, not the entity: an entity INSERT takes the ORM's bulk-insert path.
        statement = _INSERTS[model] = insert(model.__table__)
    values: dict[str, Any] = {}
    for attribute in inspect(model).column_attrs:
        if attribute.key not in row.__dict__:
            # Left unset, a column would be expired on the attached object and loaded again on first
            # read; a column with a default must be set by the caller, the others are NULL.
            if any(column.default is not None for column in attribute.columns):
                raise TypeError(f"{model.__name__}.{attribute.key} must be set")
            setattr(row, attribute.key, None)
        values[attribute.key] = getattr(row, attribute.key)
    await session.execute(statement, values)
    make_transient_to_detached(row)
    session.add(row)


def _upsert(session: AsyncSession, model: type[Any], values: Mapping[str, Any]) -> Any:
    """A dialect INSERT for ``model`` with ``.on_conflict_do_update`` available (both dialects
    spell it the same way); typed loosely because the two dialects' Insert classes are unrelated."""
    if _dialect(session) == "postgresql":
        return postgresql.insert(model).values(dict(values))
    return sqlite.insert(model).values(dict(values))


def _file_lookup(*, by_tenant: bool, include_deleted: bool) -> Select[File]:
    stmt = select(File).where(File.id == bindparam("file_id"))
    if by_tenant:
        stmt = stmt.where(File.tenant == bindparam("tenant"))
    if not include_deleted:
        stmt = stmt.where(File.status != FileStatus.DELETED)
    return stmt.execution_options(**_FRESH)


_FILE_LOOKUPS = {
    (by_tenant, include_deleted): _file_lookup(by_tenant=by_tenant, include_deleted=include_deleted)
    for by_tenant in (False, True)
    for include_deleted in (False, True)
}


async def _load_file(
    session: AsyncSession, *, tenant: str | None, file_id: str, include_deleted: bool
) -> File:
    found = await session.scalar(
        _FILE_LOOKUPS[tenant is not None, include_deleted], {"file_id": file_id, "tenant": tenant}
    )
    if found is None:
        raise file_not_found(file_id)
    return found
