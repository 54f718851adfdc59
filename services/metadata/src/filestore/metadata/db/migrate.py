"""Run the catalogue's Alembic migrations from code (no ``alembic.ini``, no dependence on the cwd).

The service calls :func:`upgrade_to_head` at start. From a shell::

    FILESTORE_DATABASE_URL=sqlite+aiosqlite:///filestore.db python -m filestore.metadata.db.migrate upgrade
    python -m filestore.metadata.db.migrate --url postgresql+asyncpg://... current
    python -m filestore.metadata.db.migrate --url sqlite+aiosqlite:///dev.db revision -m "add x"

(``revision`` autogenerates against a database that is at head.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from filestore.metadata.db.engine import create_engine, is_sqlite

__all__ = [
    "DATABASE_URL_ENV",
    "MIGRATIONS_DIR",
    "MIGRATION_LOCK_ID",
    "alembic_config",
    "configured_url",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_sqlite",
    "main",
    "run_with_connection",
    "upgrade",
    "upgrade_to_head",
    "upgrade_to_head_sync",
]

DATABASE_URL_ENV = "FILESTORE_DATABASE_URL"
#: Found next to this package, so migrations run the same from a checkout or an installed wheel.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations.

    The URL travels in ``attributes`` rather than as the ``sqlalchemy.url`` option because the
    option goes through ConfigParser interpolation, which mangles the ``%`` of escaped passwords.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = url
    return config


def configured_url(config: Config) -> str:
    url = (
        config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get(DATABASE_URL_ENV)
    )
    if not url:
        raise RuntimeError(f"no database URL: pass one or set {DATABASE_URL_ENV}")
    return str(url)


def _sqlite_pragma(connection: Connection, pragma: str) -> list[Any]:
    # Straight to the driver: through SQLAlchemy the statement would autobegin a transaction, and
    # SQLite ignores ``PRAGMA foreign_keys`` inside one.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA {pragma}")
        return list(cursor.fetchall())
    finally:
        cursor.close()


#: The PostgreSQL advisory lock every migration run holds (any constant; this one spells "FSMIGRAT").
MIGRATION_LOCK_ID = 0x46534D4947524154


def _run_guarded(connection: Connection, work: Callable[[Connection], None]) -> None:
    if connection.dialect.name != "sqlite":
        # Several runs may start at once (the metadata replicas of a deployment, each migrating at
        # start, or a migration Job beside them): the first takes the lock and migrates, the others
        # wait for its commit and then find the database at head. Alembic itself takes no lock, and
        # two concurrent upgrades would both try to create the same tables.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        work(connection)
        return
    # Batch migrations rebuild a table by copy, drop and rename; with foreign keys on, the DROP would
    # cascade-delete child rows. SQLite's documented procedure: keys off, migrate, then check.
    _sqlite_pragma(connection, "foreign_keys = OFF")
    try:
        work(connection)
        if connection.in_transaction():
            connection.commit()
        violations = _sqlite_pragma(connection, "foreign_key_check")
        if violations:
            raise RuntimeError(f"migration left foreign key violations: {violations[:5]}")
    finally:
        _sqlite_pragma(connection, "foreign_keys = ON")


async def run_with_connection(url: str, work: Callable[[Connection], None]) -> None:
    """Open ``url`` with the service's engine settings and run the sync ``work`` on one connection."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_guarded, work)
            await connection.commit()
    finally:
        await engine.dispose()


async def _with_alembic(url: str, action: Callable[[Config], object]) -> None:
    def work(connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        action(config)

    await run_with_connection(url, work)


async def upgrade(url: str, revision: str = "head") -> None:
    await _with_alembic(url, lambda config: command.upgrade(config, revision))


async def upgrade_to_head(url: str) -> None:
    """Bring the database at ``url`` to the newest schema; a no-op when it is already there."""
    await upgrade(url, "head")


def upgrade_to_head_sync(url: str) -> None:
    """:func:`upgrade_to_head` for code without a running event loop (scripts, test set-up)."""
    asyncio.run(upgrade_to_head(url))


async def downgrade(url: str, revision: str = "base") -> None:
    await _with_alembic(url, lambda config: command.downgrade(config, revision))


async def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None`` before the first migration)."""
    found: list[str | None] = []

    def work(connection: Connection) -> None:
        found.append(MigrationContext.configure(connection).get_current_revision())

    await run_with_connection(url, work)
    return found[0]


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m filestore.metadata.db.migrate")
    parser.add_argument(
        "--url", default=os.environ.get(DATABASE_URL_ENV), help=f"default: ${DATABASE_URL_ENV}"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("upgrade").add_argument("revision", nargs="?", default="head")
    sub.add_parser("downgrade").add_argument("revision", nargs="?", default="-1")
    sub.add_parser("current")
    revision = sub.add_parser("revision")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--rev-id", default=None)
    args = parser.parse_args(argv)
    if not args.url:
        parser.error(f"--url or {DATABASE_URL_ENV} is required")
    url: str = args.url
    if args.action == "upgrade":
        asyncio.run(upgrade(url, args.revision))
    elif args.action == "downgrade":
        asyncio.run(downgrade(url, args.revision))
    elif args.action == "current":
        print(asyncio.run(current_revision(url)) or "<base>")
    else:
        message: str = args.message
        rev_id: str | None = args.rev_id
        asyncio.run(
            _with_alembic(
                url,
                lambda config: command.revision(config, message=message, autogenerate=True, rev_id=rev_id),
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
