"""The transactions of the metadata RPCs: every RPC body runs in exactly one, opened here.

:meth:`UnitOfWork.read` is a context manager around one transaction. :meth:`UnitOfWork.write` takes the
work as a function instead, because an idempotent write may not run it at all (a replay) or may run it
and roll it back (a concurrent twin answered first); every write has that shape, so any write becomes
idempotent by passing an :class:`Idempotency`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.identity import ANY_TENANT
from filestore.metadata.db import store

__all__ = ["Idempotency", "UnitOfWork"]

M = TypeVar("M", bound=Message)


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
    #: than as it was created); ``None`` answers it as stored.
    replayed: Callable[[AsyncSession, M], Awaitable[M]] | None = None

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
        replayed: Callable[[AsyncSession, M], Awaitable[M]] | None = None,
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


class _Replayed(Exception):
    """Rolls back a transaction whose request was answered concurrently under the same request_id."""

    def __init__(self, response: bytes) -> None:
        super().__init__("replayed")
        self.response = response


class UnitOfWork:
    """One session and one transaction per RPC, committed when the work returns and rolled back when
    it raises."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """``async with unit.read() as session:`` a transaction for an RPC that changes nothing."""
        async with self._sessions() as session, session.begin():
            yield session

    async def write(
        self, work: Callable[[AsyncSession], Awaitable[M]], *, idempotency: Idempotency[M] | None = None
    ) -> M:
        """Run ``work`` in one transaction and answer what it answers; with ``idempotency`` (and a
        request_id), its answer is stored with the changes, and a replay answers the stored one."""
        if idempotency is None or not idempotency.request_id:
            async with self._sessions() as session, session.begin():
                return await work(session)
        return await self._write_once(work, idempotency)

    async def _write_once(
        self, work: Callable[[AsyncSession], Awaitable[M]], idempotency: Idempotency[M]
    ) -> M:
        replayed = idempotency.replayed
        async with self._sessions() as session:
            try:
                async with session.begin():
                    stored = await store.get_idempotent(
                        session,
                        tenant=idempotency.tenant,
                        method=idempotency.method,
                        request_id=idempotency.request_id,
                        request_hash=idempotency.request_hash,
                    )
                    if stored is not None:
                        first = idempotency.answer_type.FromString(stored.response)
                        return await replayed(session, first) if replayed else first
                    response = await work(session)
                    saved = await store.save_idempotent(
                        session,
                        tenant=idempotency.tenant,
                        method=idempotency.method,
                        request_id=idempotency.request_id,
                        request_hash=idempotency.request_hash,
                        response=response.SerializeToString(),
                    )
                    if saved.replayed:
                        # A concurrent twin committed first: undo our work, answer its answer.
                        raise _Replayed(saved.record.response)
                    return response
            except _Replayed as twin:
                first = idempotency.answer_type.FromString(twin.response)
                if replayed is None:
                    return first
                async with session.begin():
                    return await replayed(session, first)
