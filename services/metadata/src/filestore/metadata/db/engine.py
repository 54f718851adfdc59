"""Engine and session factories for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from filestore.metadata.db import inline_sqlite

__all__ = ["create_engine", "is_sqlite", "session_factory"]


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(
    url: str | URL,
    *,
    echo: bool = False,
    pool_size: int = 10,
    max_overflow: int = 20,
    pool_timeout: float = 30.0,
    sqlite_busy_timeout_ms: int = 30_000,
) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite+aiosqlite://...`` or ``postgresql+asyncpg://...``).

    SQLite connections enforce foreign keys, use WAL (readers never block the single writer) and wait
    up to ``sqlite_busy_timeout_ms`` for the write lock instead of failing at once. Every SQLite
    transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can
    fail with SQLITE_BUSY regardless of the busy timeout when another writer committed in between, and
    serialising writers up front is what makes the store's read-then-write sequences safe. The price,
    one writer at a time, is what SQLite imposes anyway.

    SQLite gets exactly one pooled connection. Several connections would only take turns at the write
    lock through SQLite's busy handler, which sleeps and polls (tens of milliseconds per retry under
    load); one connection makes transactions queue in-process instead, first come first served.
    Its statements run on the event loop's thread (see :mod:`filestore.metadata.db.inline_sqlite`):
    while another process holds the write lock, the busy timeout is how long the loop may stall.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            parsed,
            echo=echo,
            pool_size=1,
            max_overflow=0,
            pool_timeout=pool_timeout,
            async_creator=inline_sqlite.connect(
                parsed.database or ":memory:", uri=parsed.query.get("uri") in ("true", "1")
            ),
        )
        _configure_sqlite(engine, busy_timeout_ms=sqlite_busy_timeout_ms)
        return engine
    return create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        # Connections die behind load balancers and across database restarts; check before use.
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below instead of the driver's
        # implicit BEGIN before DML (which is deferred and skips SELECTs).
        if dbapi_connection.isolation_level is not None:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # Durable at every checkpoint, and safe against corruption in WAL mode.
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """One session per RPC; objects stay usable after commit because the servicer reads them then."""
    return async_sessionmaker(engine, expire_on_commit=False)
