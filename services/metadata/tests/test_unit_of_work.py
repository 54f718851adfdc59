"""The servicer's unit of work: one transaction per RPC, and request_id replays for the writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from filestore.core.errors import AlreadyExists, NotFound
from filestore.metadata import convert
from filestore.metadata.db import models, store
from filestore.metadata.servicer import MetadataServicer
from filestore.metadata.servicer.base import ServicerBase
from filestore.metadata.servicer.unit_of_work import Idempotency, UnitOfWork, orm_session
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import metadata_service_pb2_grpc, resources_pb2

Sessions = async_sessionmaker[AsyncSession]
Work = Callable[[AsyncSession], Awaitable[resources_pb2.Quota]]


class Refused(Exception):
    pass


def _set_quota(tenant: str, limit_bytes: int, runs: list[int] | None = None) -> Work:
    async def work(session: AsyncSession) -> resources_pb2.Quota:
        if runs is not None:
            runs.append(limit_bytes)
        return convert.quota(await store.set_quota(session, tenant=tenant, limit_bytes=limit_bytes))

    return work


def _idempotency(
    tenant: str, request: pb.SetQuotaRequest, request_id: str = "r1"
) -> Idempotency[resources_pb2.Quota]:
    return Idempotency.of(request, request_id, resources_pb2.Quota, tenant=tenant)


async def _limit(sessions: Sessions, tenant: str) -> int | None:
    async with UnitOfWork(sessions).read() as session:
        quota = await store.get_quota(session, tenant=tenant)
        return None if quota is None else quota.limit_bytes


def test_keys_are_the_rpc_names_scoped_by_the_caller() -> None:
    # Stored with every answer: a replay after a deployment must find the key it was stored under.
    create = Idempotency.of(pb.CreateFileRequest(), "r", resources_pb2.File, tenant="t", caller="alice")
    complete = Idempotency.of(
        pb.CompleteUploadRecordRequest(), "r", pb.CompleteUploadRecordResponse, tenant=None
    )
    assert (create.tenant, create.method) == ("t", "CreateFile:alice")
    # A service that named no tenant: its answers are keyed under "*", like its token's tenant.
    assert (complete.tenant, complete.method) == ("*", "CompleteUploadRecord")


def test_left_out_fields_are_not_part_of_the_same_request() -> None:
    def begin(size: int, expires_in: timedelta) -> pb.BeginUploadRequest:
        request = pb.BeginUploadRequest(file=resources_pb2.File(name="a.txt", size=size))
        request.expire_time.FromDatetime(datetime.now(UTC) + expires_in)
        return request

    def fingerprint(request: pb.BeginUploadRequest) -> str:
        return Idempotency.of(
            request, "r", pb.BeginUploadResponse, tenant="t", leave_out=("expire_time",)
        ).request_hash

    first = begin(5, timedelta(hours=1))
    assert fingerprint(first) == fingerprint(begin(5, timedelta(hours=2)))
    assert fingerprint(first) != fingerprint(begin(6, timedelta(hours=1)))
    assert first.HasField("expire_time")  # the request itself is left alone


async def test_a_write_lands_or_vanishes_whole(sessions: Sessions, tenant: str) -> None:
    unit = UnitOfWork(sessions)

    async def set_then_refuse(session: AsyncSession) -> resources_pb2.Quota:
        await _set_quota(tenant, 10)(session)
        raise Refused

    with pytest.raises(Refused):
        await unit.write(set_then_refuse)
    assert await _limit(sessions, tenant) is None
    assert (await unit.write(_set_quota(tenant, 20))).limit_bytes == 20
    assert await _limit(sessions, tenant) == 20


async def test_a_replay_answers_the_first_answer_without_running_again(
    sessions: Sessions, tenant: str
) -> None:
    unit = UnitOfWork(sessions)
    request = pb.SetQuotaRequest(tenant=tenant, limit_bytes=10)
    runs: list[int] = []
    first = await unit.write(_set_quota(tenant, 10, runs), idempotency=_idempotency(tenant, request))
    again = await unit.write(_set_quota(tenant, 99, runs), idempotency=_idempotency(tenant, request))
    assert (again, runs) == (first, [10])

    other = pb.SetQuotaRequest(tenant=tenant, limit_bytes=30)
    with pytest.raises(AlreadyExists) as reused:
        await unit.write(_set_quota(tenant, 30, runs), idempotency=_idempotency(tenant, other))
    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert (runs, await _limit(sessions, tenant)) == ([10], 10)
    # Without a request_id there is nothing to replay: the work runs.
    await unit.write(_set_quota(tenant, 40, runs), idempotency=_idempotency(tenant, other, request_id=""))
    assert (runs, await _limit(sessions, tenant)) == ([10, 40], 40)


@pytest.mark.parametrize("as_it_is_now", [False, True])
async def test_a_twin_answered_first_so_this_work_is_rolled_back(
    sessions: Sessions, tenant: str, as_it_is_now: bool
) -> None:
    """The twin's answer is stored inside this very transaction, standing in for a concurrent request
    with the same request_id that committed while this one worked (a race only PostgreSQL can run)."""
    request = pb.SetQuotaRequest(tenant=tenant, limit_bytes=10)
    idempotency = _idempotency(tenant, request)
    twin_answer = resources_pb2.Quota(tenant=tenant, limit_bytes=7)

    async def work_while_a_twin_answers(session: AsyncSession) -> resources_pb2.Quota:
        answer = await _set_quota(tenant, 10)(session)
        await store.save_idempotent(
            session,
            tenant=idempotency.tenant,
            method=idempotency.method,
            request_id=idempotency.request_id,
            request_hash=idempotency.request_hash,
            response=twin_answer.SerializeToString(),
        )
        return answer

    async def now(db: store.Executor, first: resources_pb2.Quota) -> resources_pb2.Quota:
        # As GetQuota answers it: -1 when there is no quota row.
        quota = await store.get_quota(db, tenant=tenant)
        return resources_pb2.Quota(
            tenant=first.tenant, limit_bytes=-1 if quota is None else quota.limit_bytes
        )

    if as_it_is_now:
        idempotency = Idempotency.of(request, "r1", resources_pb2.Quota, tenant=tenant, replayed=now)
    answer = await UnitOfWork(sessions).write(work_while_a_twin_answers, idempotency=idempotency)
    # The twin's answer; as it is now, that is after this work was rolled back.
    assert answer.limit_bytes == (-1 if as_it_is_now else 7)
    assert await _limit(sessions, tenant) is None


async def _new_file(connection: AsyncConnection, tenant: str) -> models.FileValues:
    return await store.create_file(
        connection, tenant=tenant, owner="alice", name="a.txt", declared_content_type="text/plain", size=1
    )


async def test_a_write_on_a_connection_lands_or_vanishes_whole_orm_session_included(
    sessions: Sessions, tenant: str
) -> None:
    unit = UnitOfWork(sessions)
    created: list[str] = []

    async def create_and_set(connection: AsyncConnection, limit_bytes: int) -> resources_pb2.Quota:
        created.append((await _new_file(connection, tenant)).id)
        async with orm_session(connection) as session:
            return convert.quota(await store.set_quota(session, tenant=tenant, limit_bytes=limit_bytes))

    async def create_set_then_refuse(connection: AsyncConnection) -> resources_pb2.Quota:
        await create_and_set(connection, 10)
        raise Refused

    with pytest.raises(Refused):
        await unit.write_rows(create_set_then_refuse)
    assert await _limit(sessions, tenant) is None
    async with unit.read_rows() as connection:
        with pytest.raises(NotFound):
            await store.get_file(connection, tenant=tenant, file_id=created[0])

    async def create_and_set_20(connection: AsyncConnection) -> resources_pb2.Quota:
        return await create_and_set(connection, 20)

    # Closing the ORM session leaves the connection's transaction to commit both writes.
    assert (await unit.write_rows(create_and_set_20)).limit_bytes == 20
    assert await _limit(sessions, tenant) == 20
    async with unit.read_rows() as connection:
        assert (await store.get_file(connection, tenant=tenant, file_id=created[1])).name == "a.txt"


async def test_a_twin_answered_first_so_this_work_on_a_connection_is_rolled_back(
    sessions: Sessions, tenant: str
) -> None:
    request = pb.CreateFileRequest(file=resources_pb2.File(name="a.txt"))
    twin_answer = resources_pb2.File(id="the-twin's", name="a.txt")
    created: list[str] = []

    async def work_while_a_twin_answers(connection: AsyncConnection) -> resources_pb2.File:
        file = await _new_file(connection, tenant)
        created.append(file.id)
        await store.save_idempotent(
            connection,
            tenant=idempotency.tenant,
            method=idempotency.method,
            request_id=idempotency.request_id,
            request_hash=idempotency.request_hash,
            response=twin_answer.SerializeToString(),
        )
        return convert.file_message(file)

    async def now(db: store.Executor, first: resources_pb2.File) -> resources_pb2.File:
        try:
            await store.get_file(db, tenant=tenant, file_id=created[0])
        except NotFound:
            return resources_pb2.File(id=first.id, name="gone")
        return first

    idempotency = Idempotency.of(request, "r1", resources_pb2.File, tenant=tenant, replayed=now)
    answer = await UnitOfWork(sessions).write_rows(work_while_a_twin_answers, idempotency=idempotency)
    assert (answer.id, answer.name) == ("the-twin's", "gone")


@pytest.mark.parametrize(
    ("values", "model"), [(models.FileValues, models.File), (models.UploadValues, models.Upload)]
)
def test_the_values_an_insert_answers_are_every_column_of_the_table(values: type, model: type) -> None:
    # The store INSERTs these fields and answers them as the row: a column missing here would be
    # written as its default and answered as nothing at all.
    assert [field.name for field in fields(values)] == [column.name for column in model.__table__.columns]


def test_every_rpc_is_served_by_exactly_one_resource_module() -> None:
    rpcs = metadata_service_pb2_grpc.MetadataServiceServicer.__dict__.keys() - object.__dict__.keys()
    rpcs = {name for name in rpcs if not name.startswith("_")}
    served = {
        name: [mixin.__name__ for mixin in MetadataServicer.__mro__ if name in mixin.__dict__]
        for name in rpcs
    }
    assert served, "the generated servicer names the RPCs"
    for name, mixins in served.items():
        assert len(mixins) == 2, (name, mixins)  # the resource module's mixin, and the generated base
        assert mixins[0] not in ("MetadataServicer", ServicerBase.__name__), (name, mixins)
