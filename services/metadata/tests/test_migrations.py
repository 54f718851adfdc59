from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from filestore.metadata.db import migrate
from filestore.metadata.db.engine import create_engine
from filestore.metadata.db.models import Base

from .conftest import BACKENDS, FreshDatabase

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EXPECTED_TABLES = {
    "blobs",
    "derivatives",
    "files",
    "grants",
    "idempotency_keys",
    "processing_results",
    "quotas",
    "uploads",
}


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            names: list[str] = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return set(names)


async def _schema_diff(url: str) -> list[Any]:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(diff)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_upgrade_head_then_downgrade_base(backend: str, fresh_database: FreshDatabase) -> None:
    async with fresh_database(backend) as url:
        assert await migrate.current_revision(url) is None

        await migrate.upgrade_to_head(url)
        assert await migrate.current_revision(url) == migrate.head_revision()
        assert await _tables(url) >= EXPECTED_TABLES

        await migrate.upgrade_to_head(url)  # already at head: nothing to do, nothing breaks
        assert await migrate.current_revision(url) == migrate.head_revision()

        await migrate.downgrade(url, "base")
        assert await migrate.current_revision(url) is None
        assert await _tables(url) <= {"alembic_version"}

        await migrate.upgrade_to_head(url)  # and the way back up still works
        assert await _tables(url) >= EXPECTED_TABLES


@pytest.mark.parametrize("backend", BACKENDS)
async def test_models_and_migrations_agree(backend: str, fresh_database: FreshDatabase) -> None:
    async with fresh_database(backend) as url:
        await migrate.upgrade_to_head(url)
        assert await _schema_diff(url) == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_uploads_made_before_part_checksums_keep_their_rows_and_carry_none(
    backend: str, fresh_database: FreshDatabase
) -> None:
    async with fresh_database(backend) as url:
        await migrate.upgrade(url, "0001")
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO files (id, tenant, owner, name, declared_content_type, size,"
                        " storage_key, status, version, labels, visibility, created_at, updated_at)"
                        " VALUES ('f1', 't', 'o', 'n', 'text/plain', 3, 'k', 'PENDING', 1, '{}',"
                        " 'PRIVATE', :now, :now)"
                    ),
                    {"now": NOW},
                )
                await connection.execute(
                    text(
                        "INSERT INTO uploads (id, file_id, tenant, kind, part_size, part_count, state,"
                        " expires_at, reserved_bytes, created_at, updated_at)"
                        " VALUES ('u1', 'f1', 't', 'MULTIPART', 5242880, 1, 'OPEN', :now, 3, :now, :now)"
                    ),
                    {"now": NOW},
                )
            await migrate.upgrade_to_head(url)
            async with engine.connect() as connection:
                rows = (await connection.execute(text("SELECT id, part_checksum FROM uploads"))).all()
                assert [tuple(row) for row in rows] == [("u1", "NONE")]
                with pytest.raises(IntegrityError):
                    await connection.execute(text("UPDATE uploads SET part_checksum = 'MD5'"))
        finally:
            await engine.dispose()


async def _check_constraints(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            found: list[dict[str, Any]] = await connection.run_sync(
                lambda sync: inspect(sync).get_check_constraints(table)
            )
    finally:
        await engine.dispose()
    return {str(constraint["name"]) for constraint in found}


async def _refused(url: str, statement: str) -> bool:
    """Whether the database refuses ``statement`` (each attempt in a transaction of its own)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    except DBAPIError:
        return True
    finally:
        await engine.dispose()
    return False


@pytest.mark.parametrize("backend", BACKENDS)
async def test_file_names_are_bounded_in_the_schema_and_files_made_before_keep_their_rows(
    backend: str, fresh_database: FreshDatabase
) -> None:
    # 255 two-byte characters: the limit counts characters, as the services do, not bytes.
    longest = "\u00e9" * 255
    async with fresh_database(backend) as url:
        await migrate.upgrade(url, "0002")
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                for file_id, name in (("f1", "report.pdf"), ("f2", longest), ("f3", "x" * 300)):
                    await connection.execute(
                        text(
                            "INSERT INTO files (id, tenant, owner, name, declared_content_type, size,"
                            " storage_key, status, version, labels, visibility, created_at, updated_at)"
                            " VALUES (:id, 't', 'o', :name, 'text/plain', 3, :id, 'READY', 1, '{}',"
                            " 'PRIVATE', :now, :now)"
                        ),
                        {"id": file_id, "name": name, "now": NOW},
                    )
                # A row that points at a file: SQLite rebuilds the files table under it.
                await connection.execute(
                    text(
                        "INSERT INTO processing_results (id, file_id, step, outcome, details, attempts,"
                        " updated_at) VALUES ('r1', 'f1', 'scan', 'PASSED', '{}', 1, :now)"
                    ),
                    {"now": NOW},
                )
            await migrate.upgrade_to_head(url)
            async with engine.connect() as connection:
                rows = (await connection.execute(text("SELECT id, name FROM files"))).all()
                names = {file_id: name for file_id, name in rows}
                results = (await connection.execute(text("SELECT id, file_id FROM processing_results"))).all()
        finally:
            await engine.dispose()
        # The one name over the limit (it could only have come in around the edge) is cut, not lost.
        assert names == {"f1": "report.pdf", "f2": longest, "f3": "x" * 255}
        assert [tuple(row) for row in results] == [("r1", "f1")]
        assert "ck_files_name_length" in await _check_constraints(url, "files")
        assert await _refused(url, "UPDATE files SET name = name || 'x' WHERE id = 'f2'")
        assert not await _refused(url, "UPDATE files SET name = 'renamed.pdf' WHERE id = 'f1'")
        # Rebuilding the table kept the constraints it had.
        assert await _refused(url, "UPDATE files SET status = 'LOST' WHERE id = 'f1'")

        await migrate.downgrade(url, "0002")
        assert "ck_files_name_length" not in await _check_constraints(url, "files")
        assert not await _refused(url, "UPDATE files SET name = name || 'x' WHERE id = 'f2'")


async def test_sync_upgrade_runs_without_a_loop(fresh_database: FreshDatabase) -> None:
    async with fresh_database("sqlite") as url:
        # The sync variant starts its own loop, so it must run where no loop is running.
        await asyncio.to_thread(migrate.upgrade_to_head_sync, url)
        assert await migrate.current_revision(url) == migrate.head_revision()


def test_migrations_are_found_independently_of_the_cwd(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert migrate.head_revision() == "0005"
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()


async def test_cli_upgrade_and_current(
    fresh_database: FreshDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fresh_database("sqlite") as url:
        assert await asyncio.to_thread(migrate.main, ["--url", url, "upgrade"]) == 0
        assert await asyncio.to_thread(migrate.main, ["--url", url, "current"]) == 0
        assert capsys.readouterr().out.strip() == migrate.head_revision()


# Without the advisory lock the runs do not fail fast: they wait on each other's DDL until the timeout.
@pytest.mark.timeout(60)
async def test_concurrent_upgrades_of_one_postgresql_database_all_succeed(
    fresh_database: FreshDatabase,
) -> None:
    # What a deployment does when several metadata replicas (or a migration Job beside them) start at
    # once.
    async with fresh_database("postgresql") as url:
        await asyncio.gather(*(migrate.upgrade_to_head(url) for _ in range(4)))
        assert await migrate.current_revision(url) == migrate.head_revision()
        assert await _tables(url) >= EXPECTED_TABLES
