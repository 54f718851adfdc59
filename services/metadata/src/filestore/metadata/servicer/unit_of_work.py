"""The transactions of the metadata RPCs: every RPC body runs in exactly one, opened here.

:meth:`UnitOfWork.read` is a context manager around one transaction. :meth:`UnitOfWork.write` takes the
work as a function instead, because an idempotent write may not run it at all (a replay) or may run it
and roll it back (a concurrent twin answered first); every write has that shape, so any write becomes
idempotent by passing an :class:`Idempotency`.

Each comes in two kinds. ``read``/``write`` hand the work an ORM session, for RPCs that go through the
store's ORM code (the file lifecycle, listings). ``read_rows``/``write_rows`` hand it a plain
connection in a transaction, for RPCs whose statements are all Core (the store's functions taking an
``Executor``): no session, identity map or unit of work is set up or torn down around them, which was
about a third of what the hot RPCs (BeginUpload, AuthorizeRead) cost. Both begin the same way, so the
isolation is the same (``BEGIN IMMEDIATE`` on SQLite, see :func:`filestore.metadata.db.engine.create_engine`).
A rare branch of a Core RPC that needs the ORM's code opens :func:`orm_session` in the same transaction.

A transaction whose connection is lost (the database restarted, failed over, or an operator
terminated the backend), or that cannot get one, answers UNAVAILABLE ``DATABASE_UNAVAILABLE``, which
callers retry, instead of INTERNAL: the pool's pre-ping catches connections that died while idle, but
not one that dies in the middle of a transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from filestore.core.errors import Unavailable
from filestore.core.identity import ANY_TENANT
from filestore.core.reasons import Reason
from filestore.metadata.db import store

__all__ = ["Idempotency", "UnitOfWork", "orm_session"]

M = TypeVar("M", bound=Message)
#: What a unit of work hands its work: an ORM session or a plain connection.
D = TypeVar("D", AsyncSession, AsyncConnection)


@dataclass(frozen=True, slots=True)
class Idempotency(Generic[M]):
    """How a write answers a replay of its ``request_id`` (AIP-155): the first answer again, and
    ALREADY_EXISTS (``REQUEST_ID_REUSED``) for a different request under the same id.

    Build it with :meth:`of`; without a ``request_id`` the write is a plain one.
    """

    tenant: str
    #: The key's method: the RPC's name, scoped by the caller where callers pick request_ids
    #: independently (``CreateFile:alice``).
    method: str
    request_id: str
    #: SHA-256 of what "the same request" means (see ``leave_out`` of :meth:`of`).
    request_hash: str
    answer_type: type[M]
    #: Turns the stored first answer into the answer a replay gets (the resource as it is now rather
    #: than as it was created), in the write's kind of transaction; ``None`` answers it as stored.
    #: It reads through Core statements, which run in either kind of transaction.
    replayed: Callable[[store.Executor, M], Awaitable[M]] | None = None

    @classmethod
    def of(
        cls,
        request: Message,
        request_id: str,
        answer_type: type[M],
        /,
        *,
        tenant: str | None,
        caller: str | None = None,
        leave_out: Iterable[str] = (),
        replayed: Callable[[store.Executor, M], Awaitable[M]] | None = None,
    ) -> Idempotency[M]:
        """The idempotency of ``request`` under ``request_id``, answered by an ``answer_type``.

        Keyed within ``tenant`` (``None`` or empty: a service acting in no one tenant, keyed under
        ``*``) by the RPC's name (the request message's name without ``Request``), followed by
        ``:caller`` when given. ``leave_out`` names fields that are not part of "the same request":
        values a caller derives afresh on every retry, such as an expiry computed from the current time.
        """
        rpc = request.DESCRIPTOR.name.removesuffix("Request")
        fingerprint = request
        if leave_out:
            fingerprint = type(request)()
            fingerprint.CopyFrom(request)
            for field in leave_out:
                fingerprint.ClearField(field)
        return cls(
            tenant=tenant or ANY_TENANT,
            method=rpc if caller is None else f"{rpc}:{caller}",
            request_id=request_id,
            request_hash=hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).hexdigest(),
            answer_type=answer_type,
            replayed=replayed,
        )


@contextmanager
def _database_outage_is_unavailable() -> Iterator[None]:
    """Turns a lost or unobtainable database connection into a retryable UNAVAILABLE.

    SQLAlchemy marks the errors its dialect recognises as a disconnect with ``connection_invalidated``
    (and discards the connection); a refused connect surfaces as ``OSError``; a pool that stayed
    exhausted for its whole timeout as its ``TimeoutError``. Any other database error is a fault of
    ours and stays INTERNAL.
    """
    try:
        yield
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        raise Unavailable(
            "the metadata service lost its database connection; retry", reason=Reason.DATABASE_UNAVAILABLE
        ) from error
    except (OSError, PoolTimeoutError) as error:
        raise Unavailable(
            "the metadata service could not reach its database; retry", reason=Reason.DATABASE_UNAVAILABLE
        ) from error


class _Replayed(Exception):
    """Rolls back a transaction whose request was answered concurrently under the same request_id."""

    def __init__(self, response: bytes) -> None:
        super().__init__("replayed")
        self.response = response


class UnitOfWork:
    """One transaction per RPC, committed when the work returns and rolled back when it raises."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        engine = sessions.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("the session factory must be bound to an AsyncEngine")
        self._engine = engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """``async with unit.read() as session:`` a transaction for an RPC that changes nothing."""
        with _database_outage_is_unavailable():
            async with self._sessions() as session, session.begin():
                yield session

    @asynccontextmanager
    async def read_rows(self) -> AsyncIterator[AsyncConnection]:
        """``async with unit.read_rows() as connection:`` the same, on a plain connection."""
        with _database_outage_is_unavailable():
            async with self._engine.begin() as connection:
                yield connection

    async def write(
        self, work: Callable[[AsyncSession], Awaitable[M]], *, idempotency: Idempotency[M] | None = None
    ) -> M:
        """Run ``work`` in one transaction and answer what it answers; with ``idempotency`` (and a
        request_id), its answer is stored with the changes, and a replay answers the stored one."""
        with _database_outage_is_unavailable():
            return await self._write(self._sessions, work, idempotency)

    async def write_rows(
        self, work: Callable[[AsyncConnection], Awaitable[M]], *, idempotency: Idempotency[M] | None = None
    ) -> M:
        """:meth:`write`, on a plain connection."""
        with _database_outage_is_unavailable():
            return await self._write(self._engine.connect, work, idempotency)

    @staticmethod
    async def _write(
        open_db: Callable[[], AbstractAsyncContextManager[D]],
        work: Callable[[D], Awaitable[M]],
        idempotency: Idempotency[M] | None,
    ) -> M:
        if idempotency is None or not idempotency.request_id:
            async with open_db() as db, db.begin():
                return await work(db)
        replayed = idempotency.replayed
        async with open_db() as db:
            try:
                async with db.begin():
                    stored = await store.get_idempotent(
                        db,
                        tenant=idempotency.tenant,
                        method=idempotency.method,
                        request_id=idempotency.request_id,
                        request_hash=idempotency.request_hash,
                    )
                    if stored is not None:
                        first = idempotency.answer_type.FromString(stored.response)
                        return await replayed(db, first) if replayed else first
                    response = await work(db)
                    saved = await store.save_idempotent(
                        db,
                        tenant=idempotency.tenant,
                        method=idempotency.method,
                        request_id=idempotency.request_id,
                        request_hash=idempotency.request_hash,
                        response=response.SerializeToString(),
                    )
                    if saved.replayed:
                        # A concurrent twin committed first: undo our work, answer its answer.
                        raise _Replayed(saved.response)
                    return response
            except _Replayed as twin:
                first = idempotency.answer_type.FromString(twin.response)
                if replayed is None:
                    return first
                async with db.begin():
                    return await replayed(db, first)


@asynccontextmanager
async def orm_session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """An ORM session inside ``connection``'s transaction, for the rare branch of a Core RPC that
    needs the store's ORM code (BeginUpload's dedup completes the upload through the lifecycle).

    The session joins the transaction without owning it: its changes commit or roll back with the
    connection's, and closing it leaves the transaction as it is.
    """
    async with AsyncSession(
        bind=connection, expire_on_commit=False, join_transaction_mode="rollback_only"
    ) as session:
        yield session
