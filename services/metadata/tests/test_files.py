from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from filestore.core.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, file_not_found
from filestore.core.validation import MAX_NAME_CHARS
from filestore.metadata.db import store
from filestore.metadata.db.models import File, FileStatus, ProcessingOutcome, Visibility

Sessions = async_sessionmaker[AsyncSession]

S = FileStatus
LEGAL = [
    (S.PENDING, S.UPLOADED),
    (S.UPLOADED, S.PROCESSING),
    (S.PROCESSING, S.READY),
    (S.PROCESSING, S.QUARANTINED),
    (S.PROCESSING, S.FAILED),
    (S.READY, S.QUARANTINED),  # its bytes changed in storage after verification
    # Reprocessing.
    (S.READY, S.UPLOADED),
    (S.QUARANTINED, S.UPLOADED),
    (S.FAILED, S.UPLOADED),
    *[(source, S.DELETED) for source in FileStatus if source != S.DELETED],
]
# The path that reaches each state from PENDING through legal moves only.
PATH_TO = {
    S.PENDING: [],
    S.UPLOADED: [S.UPLOADED],
    S.PROCESSING: [S.UPLOADED, S.PROCESSING],
    S.READY: [S.UPLOADED, S.PROCESSING, S.READY],
    S.QUARANTINED: [S.UPLOADED, S.PROCESSING, S.QUARANTINED],
    S.FAILED: [S.UPLOADED, S.PROCESSING, S.FAILED],
    S.DELETED: [S.DELETED],
}
ILLEGAL = [
    (source, target)
    for source, target in itertools.product(FileStatus, FileStatus)
    if source != target and (source, target) not in LEGAL
]


async def _new_file(sessions: Sessions, tenant: str, *, owner: str = "alice", size: int = 100) -> File:
    async with sessions() as session, session.begin():
        return await store.create_file(
            session,
            tenant=tenant,
            owner=owner,
            name="../../etc/passwd",
            declared_content_type="text/plain",
            size=size,
        )


async def _file_in(sessions: Sessions, tenant: str, status: FileStatus) -> File:
    file = await _new_file(sessions, tenant)
    for step in PATH_TO[status]:
        async with sessions() as session, session.begin():
            file = await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=step)
    assert file.status == status
    return file


async def test_create_and_get(sessions: Sessions, tenant: str) -> None:
    created = await _new_file(sessions, tenant)
    assert len(created.id) == 36
    # The client's name is metadata only; the key is made of ids.
    assert created.storage_key == f"originals/{tenant}/{created.id}"
    assert created.status == FileStatus.PENDING
    assert created.version == 1
    assert created.visibility == Visibility.PRIVATE
    async with sessions() as session:
        fetched = await store.get_file(session, tenant=tenant, file_id=created.id)
    assert fetched.name == "../../etc/passwd"
    assert fetched.created_at.tzinfo is not None
    assert fetched.created_at.utcoffset() == timedelta(0)
    assert abs(fetched.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert fetched.labels == {}


async def test_other_tenant_sees_not_found(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    async with sessions() as session, session.begin():
        with pytest.raises(NotFound) as missing:
            await store.get_file(session, tenant="someone-else", file_id=file.id)
        with pytest.raises(NotFound) as other:
            await store.get_file(session, tenant="someone-else", file_id="no-such-id")
        # Indistinguishable from a file that does not exist at all.
        assert missing.value.reason == other.value.reason == "FILE_NOT_FOUND"
        with pytest.raises(NotFound):
            await store.transition_file(
                session, tenant="someone-else", file_id=file.id, to_status=FileStatus.DELETED
            )
        with pytest.raises(NotFound):
            await store.update_file(session, tenant="someone-else", file_id=file.id, name="x")
        # The trusted internal caller sees every tenant.
        assert (await store.get_file(session, tenant=None, file_id=file.id)).id == file.id
    async with sessions() as session:
        assert (await store.get_file(session, tenant=tenant, file_id=file.id)).status == FileStatus.PENDING


async def test_a_file_out_of_reach_is_the_answer_the_servicer_gives(sessions: Sessions, tenant: str) -> None:
    """The servicer passes these errors through to the client: each must be ``file_not_found`` itself."""
    file = await _new_file(sessions, tenant)
    calls: list[Callable[[AsyncSession], Awaitable[object]]] = [
        lambda session: store.get_file(session, tenant="someone-else", file_id=file.id, include_deleted=True),
        lambda session: store.transition_file(
            session, tenant="someone-else", file_id=file.id, to_status=FileStatus.UPLOADED
        ),
        lambda session: store.update_file_facts(
            session, tenant="someone-else", file_id=file.id, sniffed_content_type="text/plain"
        ),
        lambda session: store.set_processing_result(
            session, tenant="someone-else", file_id=file.id, step="sniff", outcome=ProcessingOutcome.PASSED
        ),
    ]
    expected = file_not_found(file.id)
    for call in calls:
        async with sessions() as session, session.begin():
            with pytest.raises(NotFound) as refused:
                await call(session)
        answer = (refused.value.message, refused.value.reason, refused.value.metadata)
        assert answer == (expected.message, expected.reason, expected.metadata)


@pytest.mark.parametrize(("source", "target"), LEGAL)
async def test_legal_transition(
    sessions: Sessions, tenant: str, source: FileStatus, target: FileStatus
) -> None:
    file = await _file_in(sessions, tenant, source)
    async with sessions() as session, session.begin():
        moved = await store.transition_file(
            session, tenant=tenant, file_id=file.id, to_status=target, reason="because"
        )
    assert moved.status == target
    assert moved.version == file.version + 1
    assert moved.status_reason == "because"
    assert (moved.deleted_at is not None) == (target == FileStatus.DELETED)


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
async def test_illegal_transition(
    sessions: Sessions, tenant: str, source: FileStatus, target: FileStatus
) -> None:
    file = await _file_in(sessions, tenant, source)
    async with sessions() as session, session.begin():
        with pytest.raises(FailedPrecondition) as refused:
            await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=target)
    assert refused.value.reason == "ILLEGAL_TRANSITION"
    assert refused.value.metadata == {"file_id": file.id, "from": str(source), "to": str(target)}
    async with sessions() as session:
        unchanged = await store.get_file(session, tenant=tenant, file_id=file.id, include_deleted=True)
    assert (unchanged.status, unchanged.version) == (source, file.version)


@pytest.mark.parametrize("status", list(FileStatus))
async def test_reapplying_the_current_state_is_a_noop(
    sessions: Sessions, tenant: str, status: FileStatus
) -> None:
    file = await _file_in(sessions, tenant, status)
    async with sessions() as session, session.begin():
        again = await store.transition_file(
            session, tenant=tenant, file_id=file.id, to_status=status, reason="redelivered"
        )
    assert (again.status, again.version, again.status_reason) == (status, file.version, file.status_reason)


async def test_stale_etag_is_aborted(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    async with sessions() as session, session.begin():
        with pytest.raises(Aborted) as stale:
            await store.transition_file(
                session,
                tenant=tenant,
                file_id=file.id,
                to_status=S.UPLOADED,
                expected_version=file.version + 5,
            )
        assert stale.value.reason == "ETAG_MISMATCH"
        moved = await store.transition_file(
            session, tenant=tenant, file_id=file.id, to_status=S.UPLOADED, expected_version=file.version
        )
    assert moved.version == file.version + 1


async def test_update_file_fields_and_etag(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    async with sessions() as session, session.begin():
        updated = await store.update_file(
            session,
            tenant=tenant,
            file_id=file.id,
            expected_version=file.version,
            name="report.pdf",
            labels={"project": "x"},
            visibility=Visibility.PUBLIC,
        )
    assert (updated.name, updated.labels, updated.visibility) == (
        "report.pdf",
        {"project": "x"},
        Visibility.PUBLIC,
    )
    assert updated.version == file.version + 1
    assert updated.updated_at >= file.updated_at
    async with sessions() as session, session.begin():
        with pytest.raises(Aborted):
            await store.update_file(
                session, tenant=tenant, file_id=file.id, expected_version=file.version, name="late.pdf"
            )
        with pytest.raises(InvalidArgument) as too_long:
            await store.update_file(session, tenant=tenant, file_id=file.id, name="x" * (MAX_NAME_CHARS + 1))
        assert too_long.value.reason == "INVALID_NAME"
    async with sessions() as session:
        stored = await store.get_file(session, tenant=tenant, file_id=file.id)
    assert (stored.name, stored.labels) == ("report.pdf", {"project": "x"})


async def test_deleted_files_are_hidden(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    async with sessions() as session, session.begin():
        await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=S.DELETED)
    async with sessions() as session:
        with pytest.raises(NotFound):
            await store.get_file(session, tenant=tenant, file_id=file.id)
        deleted = await store.get_file(session, tenant=tenant, file_id=file.id, include_deleted=True)
        assert deleted.status == S.DELETED
        page = await store.list_files(session, tenant=tenant)
        assert page.files == []
        listed = await store.list_files(
            session, tenant=tenant, filters=store.FileFilter(statuses=frozenset({S.DELETED}))
        )
        assert [f.id for f in listed.files] == [file.id]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"name": ""}, "INVALID_NAME"),
        ({"name": "x" * (MAX_NAME_CHARS + 1)}, "INVALID_NAME"),
        ({"size": -1}, "INVALID_SIZE"),
        ({"sha256": "ABC"}, "INVALID_SHA256"),
        ({"owner": ""}, "MISSING_FIELD"),
    ],
)
async def test_create_file_validates_input(
    sessions: Sessions, tenant: str, override: dict[str, object], reason: str
) -> None:
    async with sessions() as session, session.begin():
        arguments: dict[str, object] = {
            "tenant": tenant,
            "owner": "alice",
            "name": "a.txt",
            "declared_content_type": "text/plain",
            "size": 1,
            **override,
        }
        with pytest.raises(InvalidArgument) as bad:
            await store.create_file(session, **arguments)  # type: ignore[arg-type]
        assert bad.value.reason == reason


async def test_the_store_keeps_names_to_the_contract_s_limit(sessions: Sessions, tenant: str) -> None:
    # The limit counts characters (as the edge and the schema do), not bytes: these are 510 of UTF-8.
    longest = "\u00e9" * MAX_NAME_CHARS
    async with sessions() as session, session.begin():
        file = await store.create_file(
            session, tenant=tenant, owner="alice", name=longest, declared_content_type="text/plain", size=1
        )
        with pytest.raises(InvalidArgument) as too_long:
            await store.update_file(session, tenant=tenant, file_id=file.id, name=longest + "e")
    assert (too_long.value.reason, too_long.value.metadata) == ("INVALID_NAME", {"max_chars": "255"})
    async with sessions() as session:
        assert (await store.get_file(session, tenant=tenant, file_id=file.id)).name == longest


async def test_keyset_pagination(sessions: Sessions, tenant: str) -> None:
    created = [await _new_file(sessions, tenant, owner="bob" if i % 2 else "alice") for i in range(7)]
    newest_first = [file.id for file in sorted(created, key=lambda f: (f.created_at, f.id), reverse=True)]
    async with sessions() as session:
        seen: list[str] = []
        cursor: store.KeysetCursor | None = None
        while True:
            page = await store.list_files(session, tenant=tenant, page_size=3, after=cursor)
            seen.extend(file.id for file in page.files)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == newest_first

        # The same position expressed in another time zone must mean the same place.
        first = await store.list_files(session, tenant=tenant, page_size=3)
        assert first.next_cursor is not None
        shifted = store.KeysetCursor(
            created_at=first.next_cursor.created_at.astimezone(timezone(timedelta(hours=-7))),
            id=first.next_cursor.id,
        )
        utc_page = await store.list_files(session, tenant=tenant, page_size=3, after=first.next_cursor)
        shifted_page = await store.list_files(session, tenant=tenant, page_size=3, after=shifted)
        assert [f.id for f in shifted_page.files] == [f.id for f in utc_page.files] == seen[3:6]

        bobs = await store.list_files(
            session, tenant=tenant, filters=store.FileFilter(owner="bob"), page_size=100
        )
        assert {file.id for file in bobs.files} == {file.id for file in created[1::2]}
        assert bobs.next_cursor is None
        assert (await store.list_files(session, tenant="nobody")).files == []
        with pytest.raises(InvalidArgument):
            await store.list_files(session, tenant=tenant, page_size=0)


async def test_list_filters(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():

        async def make(name: str, content_type: str, labels: dict[str, str]) -> File:
            return await store.create_file(
                session,
                tenant=tenant,
                owner="alice",
                name=name,
                declared_content_type=content_type,
                size=1,
                labels=labels,
            )

        photo = await make("Holiday.jpg", "image/jpeg", {"album": "2025", "public": "no"})
        scan = await make("holiday-scan.pdf", "application/pdf", {"album": "2025"})
        other = await make("notes.txt", "text/plain", {})
        await store.update_file_facts(
            session,
            tenant=tenant,
            file_id=scan.id,
            sniffed_content_type="image/png",
            extracted_text="Invoice 100%",
        )
        await store.transition_file(session, tenant=tenant, file_id=other.id, to_status=S.UPLOADED)

    async def names(**filters: object) -> set[str]:
        async with sessions() as session:
            page = await store.list_files(
                session,
                tenant=tenant,
                filters=store.FileFilter(**filters),  # type: ignore[arg-type]
                page_size=100,
            )
        return {file.name for file in page.files}

    # The sniffed type wins over the declared one.
    assert await names(content_type_prefix="image/") == {"Holiday.jpg", "holiday-scan.pdf"}
    assert await names(labels={"album": "2025"}) == {"Holiday.jpg", "holiday-scan.pdf"}
    assert await names(labels={"album": "2025", "public": "no"}) == {"Holiday.jpg"}
    assert await names(name_prefix="Holi") == {"Holiday.jpg"}  # case-sensitive, even on SQLite
    assert await names(name_prefix="holi") == {"holiday-scan.pdf"}
    assert await names(text_contains="invoice") == {"holiday-scan.pdf"}
    assert await names(text_contains="0%") == {"holiday-scan.pdf"}  # % is literal, not a wildcard
    assert await names(text_contains="1%") == set()
    assert await names(statuses=frozenset({S.UPLOADED})) == {"notes.txt"}
    assert await names(created_after=photo.created_at, created_before=other.created_at) == {
        "Holiday.jpg",
        "holiday-scan.pdf",
    }


async def test_concurrent_conflicting_transitions_have_one_winner(sessions: Sessions, tenant: str) -> None:
    file = await _file_in(sessions, tenant, S.PROCESSING)
    # (READY is left out: a READY file may still be quarantined, so READY is not a final verdict.)
    targets = [S.QUARANTINED, S.FAILED] * 9

    async def attempt(target: FileStatus) -> FileStatus | str:
        try:
            async with sessions() as session, session.begin():
                moved = await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=target)
                return moved.status
        except FailedPrecondition as refused:
            return refused.reason

    outcomes = await asyncio.gather(*(attempt(target) for target in targets))
    async with sessions() as session:
        final = await store.get_file(session, tenant=tenant, file_id=file.id)
    assert final.version == file.version + 1  # exactly one real move
    assert final.status in {S.QUARANTINED, S.FAILED}
    # Whoever asked for the winning state got a no-op; everybody else was refused.
    for target, outcome in zip(targets, outcomes, strict=True):
        assert outcome == (final.status if target == final.status else "ILLEGAL_TRANSITION")


async def test_concurrent_redelivered_transition_moves_once(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)

    async def deliver() -> File:
        async with sessions() as session, session.begin():
            return await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=S.UPLOADED)

    results = await asyncio.gather(*(deliver() for _ in range(20)))
    assert {result.status for result in results} == {S.UPLOADED}
    async with sessions() as session:
        assert (await store.get_file(session, tenant=tenant, file_id=file.id)).version == file.version + 1


async def test_transition_waits_for_a_concurrent_one_and_rechecks(
    sessions: Sessions,
    engine: AsyncEngine,
    tenant: str,
    lock_waiter: Callable[[AsyncEngine], Awaitable[None]],
) -> None:
    """A transaction that read PROCESSING must not apply its move after another committed READY."""
    file = await _file_in(sessions, tenant, S.PROCESSING)
    async with sessions() as first:
        await first.begin()
        await store.transition_file(first, tenant=tenant, file_id=file.id, to_status=S.READY)

        started = asyncio.Event()

        async def second() -> None:
            async with sessions() as session, session.begin():
                started.set()
                await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=S.FAILED)

        racing = asyncio.create_task(second())
        await asyncio.wait_for(started.wait(), 10)
        if engine.dialect.name == "postgresql":
            # Proof that the second transaction read PROCESSING and now blocks on our row lock.
            await lock_waiter(engine)
        await first.commit()
    with pytest.raises(FailedPrecondition) as refused:
        await racing
    assert refused.value.metadata["from"] == "READY"


@pytest.mark.parametrize("outcome", [S.READY, S.QUARANTINED, S.FAILED])
async def test_going_back_to_uploaded_clears_the_step_results(
    sessions: Sessions, tenant: str, outcome: FileStatus
) -> None:
    file = await _file_in(sessions, tenant, outcome)
    async with sessions() as session, session.begin():
        await store.set_processing_result(
            session, tenant=None, file_id=file.id, step="scan", outcome=ProcessingOutcome.PASSED
        )
    async with sessions() as session, session.begin():
        again = await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=S.UPLOADED)
        assert again.status == S.UPLOADED
        assert await store.list_processing_results(session, tenant=tenant, file_id=file.id) == []
