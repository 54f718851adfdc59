"""Alembic environment for the metadata catalogue (async template, SQLite and PostgreSQL).

Normally :mod:`filestore.metadata.db.migrate` runs this with a connection it already opened (passed
in ``config.attributes["connection"]``). Run by Alembic's own command line instead, it opens one
from ``config.attributes["url"]``, the ``sqlalchemy.url`` option or ``FILESTORE_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from filestore.metadata.db import migrate
from filestore.metadata.db.models import Base, StrEnumType, UtcDateTime

config = context.config
target_metadata = Base.metadata


def render_item(kind: str, obj: Any, _context: AutogenContext) -> str | Literal[False]:
    """Render our TypeDecorators as the plain types they store, so revision files never import
    application code (a later refactor of ``models`` must not break old revisions)."""
    if kind == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(obj, StrEnumType):
        return f"sa.String(length={obj.impl.length})"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead, and the same
        # revision files then serve PostgreSQL unchanged.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )


def run_migrations(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = migrate.configured_url(config)
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=migrate.is_sqlite(url),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    asyncio.run(migrate.run_with_connection(migrate.configured_url(config), run_migrations))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
