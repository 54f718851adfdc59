"""SQLite driven on the event loop's own thread, for SQLAlchemy's ``sqlite+aiosqlite`` dialect.

aiosqlite runs every call (each execute, each fetch, commit) on a worker thread and hands the
result back through the event loop: two thread switches per call, some 30 per catalogue
transaction. On SQLite the work itself is a few microseconds per statement (WAL, no fsync on
commit, an in-process B-tree), so the switches were nearly all of a transaction's time, and under
CPU contention each one waits for a scheduler slot: the metadata service spent milliseconds per
RPC doing nothing while holding the one connection every other RPC queues for.

This module gives the dialect, through ``create_async_engine(async_creator=...)``, a connection
with aiosqlite's calling convention whose coroutines run the statement right away and never
suspend. A transaction then runs from BEGIN to COMMIT without yielding to the event loop, which
also means no other coroutine can interleave with it: with the engine's single pooled connection
that is exactly the serialisation SQLite's one writer imposes anyway.

The price is that a statement blocks the loop while it runs. That is the right trade only for
statements that take microseconds, which holds for this catalogue: every query is an indexed
lookup or a bounded page. Waiting for another process's write lock would block the loop too, so
the busy timeout matters (see :func:`filestore.metadata.db.engine.create_engine`); in the embedded
stack the metadata service is the only writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

__all__ = ["InlineConnection", "InlineCursor", "connect"]

Parameters = Sequence[Any] | dict[str, Any]


class InlineCursor:
    """A sqlite3 cursor behind the awaitable methods of an aiosqlite cursor."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Parameters | None = None) -> Self:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> Self:
        self._cursor.executemany(sql, seq_of_parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """A sqlite3 connection behind the awaitable methods of an aiosqlite connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._sqlite: sqlite3.Connection | None = connection

    @property
    def _connection(self) -> sqlite3.Connection | None:
        # The dialect checks this attribute of aiosqlite's connection before commit and rollback:
        # None once the connection is closed.
        return self._sqlite

    def _open(self) -> sqlite3.Connection:
        if self._sqlite is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return self._sqlite

    @property
    def isolation_level(self) -> str | None:
        return self._open().isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._open().cursor())

    async def execute(self, sql: str, parameters: Parameters | None = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        self._open().commit()

    async def rollback(self) -> None:
        self._open().rollback()

    async def create_function(self, name: str, num_params: int, func: Callable[..., Any], **kw: Any) -> None:
        self._open().create_function(name, num_params, func, **kw)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close at once; what the dialect calls when it terminates a connection outside a greenlet."""
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None


def connect(database: str, *, uri: bool = False) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine`` opening ``database`` in autocommit mode: the
    engine's "begin" hook issues BEGIN IMMEDIATE itself (see ``engine.create_engine``)."""

    async def creator() -> InlineConnection:
        # check_same_thread=False only because the pool may close a connection from the garbage
        # collector's thread; every statement runs on the event loop's thread.
        return InlineConnection(
            sqlite3.connect(database, isolation_level=None, check_same_thread=False, uri=uri)
        )

    return creator
