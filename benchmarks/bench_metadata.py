"""make bench-metadata: ListFiles at depth 10,000 against page 1, and CreateFile throughput, through
the gRPC API of a real metadata service over 1,000,000 file rows, on SQLite and on PostgreSQL.

For each database: a fresh one (a new SQLite file; a scratch database on TEST_DATABASE_URL, dropped
afterwards) gets the Alembic migrations, then 1,000,000 rows of one tenant in bulk (SQLAlchemy Core
executemany in batches on SQLite, COPY on PostgreSQL, never a transaction per row); the metadata
service then runs as its own process (the embedded stack with only the `metadata` component). The
page-1 and depth-10,000 pages are fetched alternately, so drift in the machine hits both alike; the
ratio is of their medians. Keyset pagination should make it about 1.

Ends with: RESULT sqlite_depth_ratio=<x> postgres_depth_ratio=<y> create_per_s_sqlite=<a>
create_per_s_postgres=<b>

BENCH_ROWS (default 1,000,000) shrinks the table for a quick try.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs published
import grpc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.keys import original_key
from filestore.metadata.db.migrate import upgrade_to_head
from filestore.metadata.db.models import File
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import metadata_service_pb2_grpc, resources_pb2

DEFAULT_TEST_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TENANT = "bench"
OWNERS = [f"user-{n:03d}" for n in range(100)]
DEPTH = 10_000
DEPTH_STEP = 1000  # page size used to walk down to the depth
PAGE_SIZE = 50  # the page timed (ListFiles' default)
PAGE_FETCHES = 150  # of each page, alternating
BATCH = 20_000
CREATES = 2000
CREATE_CONCURRENCY = 32
CONTENT_TYPES = ["image/png", "image/jpeg", "application/pdf", "text/plain", "video/mp4"]


@dataclass(frozen=True, slots=True)
class Figures:
    first_page_ms: float
    deep_page_ms: float
    create_per_s: float

    @property
    def depth_ratio(self) -> float:
        return self.deep_page_ms / self.first_page_ms


# ------------------------------------------------------------------------------------ filling


FILES = File.metadata.tables["files"]
COLUMNS = [column.name for column in FILES.columns]


def file_rows(count: int, *, dialect: str) -> Iterator[list[tuple[Any, ...]]]:
    """``count`` files of one tenant, in batches of rows in ``COLUMNS`` order, already in the form the
    driver stores (what the ORM's column types would make of them: naive-UTC text timestamps on
    SQLite, ``timestamptz`` values on PostgreSQL, labels as JSON text). One second of creation time
    apart plus jitter, newest last; the benchmark checks through the API that it reads them back."""
    rng = random.Random(1)
    start = int(time.time()) - count - 3600
    labels = ""
    position = {name: index for index, name in enumerate(COLUMNS)}
    template: list[Any] = [None] * len(COLUMNS)
    template[position["tenant"]] = TENANT
    template[position["version"]] = 1
    template[position["visibility"]] = "PRIVATE"
    batch: list[tuple[Any, ...]] = []
    for n in range(count):
        if n % BATCH == 0:
            labels = json.dumps({"batch": str(n // BATCH)})
        file_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        seconds, micros = start + n, rng.randrange(1_000_000)
        created: Any
        if dialect == "sqlite":
            created = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(seconds))}.{micros:06d}"
        else:
            created = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
        roll = rng.random()
        status = "DELETED" if roll < 0.01 else "PENDING" if roll < 0.02 else "READY"
        row = template.copy()
        row[position["id"]] = file_id
        row[position["owner"]] = OWNERS[n % len(OWNERS)]
        row[position["name"]] = f"file-{n}.bin"
        row[position["declared_content_type"]] = CONTENT_TYPES[n % len(CONTENT_TYPES)]
        row[position["size"]] = 1000 + n % 100_000
        row[position["storage_key"]] = original_key(TENANT, file_id)
        row[position["status"]] = status
        row[position["labels"]] = labels
        row[position["created_at"]] = row[position["updated_at"]] = created
        if status == "DELETED":
            row[position["deleted_at"]] = created
        batch.append(tuple(row))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


@asynccontextmanager
async def secondary_indexes_built_afterwards(connection: AsyncConnection) -> AsyncIterator[None]:
    """Drop the files table's secondary indexes for the load and build them again after it (by
    sorting, far faster than maintaining five B-trees row by row), exactly as the migration made them."""
    indexes = sorted(FILES.indexes, key=lambda index: str(index.name))

    def drop(sync: Connection) -> None:
        for index in indexes:
            index.drop(sync)

    def create(sync: Connection) -> None:
        for index in indexes:
            index.create(sync)

    await connection.run_sync(drop)
    await connection.commit()
    yield
    await connection.run_sync(create)
    await connection.commit()


async def pipelined(
    batches: Iterator[list[tuple[Any, ...]]], write: Callable[[list[tuple[Any, ...]]], Awaitable[object]]
) -> None:
    """Write each batch while the next one is being made (the driver works in its own thread or in
    the server meanwhile)."""
    pending: asyncio.Task[object] | None = None
    for batch in batches:
        if pending is not None:
            await pending
        pending = asyncio.ensure_future(write(batch))
        await asyncio.sleep(0)  # let the write start before the next batch is made
    if pending is not None:
        await pending


async def fill_sqlite(url: str, count: int) -> None:
    engine = create_async_engine(url)
    statement = f"INSERT INTO files ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("PRAGMA journal_mode = WAL")
            # A scratch file being loaded: no fsync, and a cache that holds the indexes (random ids).
            await connection.exec_driver_sql("PRAGMA synchronous = OFF")
            await connection.exec_driver_sql("PRAGMA cache_size = -1000000")
            async with secondary_indexes_built_afterwards(connection):

                async def write(batch: list[tuple[Any, ...]]) -> None:
                    await connection.exec_driver_sql(statement, batch)  # executemany
                    await connection.commit()  # a transaction per batch

                await pipelined(file_rows(count, dialect="sqlite"), write)
    finally:
        await engine.dispose()


async def fill_postgres(url: str, count: int) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            async with secondary_indexes_built_afterwards(connection):
                raw = await connection.get_raw_connection()
                copier = raw.driver_connection
                assert copier is not None

                async def write(batch: list[tuple[Any, ...]]) -> None:
                    await copier.copy_records_to_table("files", records=batch, columns=COLUMNS)

                await pipelined(file_rows(count, dialect="postgresql"), write)
                await connection.commit()
            # What autovacuum does after a bulk load; the planner needs the statistics either way.
            await connection.exec_driver_sql("ANALYZE files")
            await connection.commit()
    finally:
        await engine.dispose()


async def _asyncpg_connect(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    connection: asyncpg.Connection = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )
    return connection


@asynccontextmanager
async def scratch_postgres() -> AsyncIterator[str]:
    base = make_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    name = f"filestore_bench_{uuid.uuid4().hex[:12]}"
    admin = await _asyncpg_connect(base.render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# ------------------------------------------------------------------------------------ measuring


async def measure(stub: metadata_service_pb2_grpc.MetadataServiceAsyncStub) -> Figures:
    token = ""
    for _ in range(DEPTH // DEPTH_STEP):
        page = await stub.ListFiles(
            pb.ListFilesRequest(tenant=TENANT, page_size=DEPTH_STEP, page_token=token)
        )
        token = page.next_page_token
    first = pb.ListFilesRequest(tenant=TENANT, page_size=PAGE_SIZE)
    deep = pb.ListFilesRequest(tenant=TENANT, page_size=PAGE_SIZE, page_token=token)
    top = (await stub.ListFiles(first)).files
    below = (await stub.ListFiles(deep)).files
    # The rows were made one second apart (1% of them DELETED, which do not list): the deep page must
    # start about DEPTH seconds below the top, which also shows the bulk-loaded timestamps read back.
    gap = top[0].create_time.seconds - below[0].create_time.seconds
    if len(below) != PAGE_SIZE or not DEPTH <= gap <= DEPTH * 1.05:
        raise SystemExit(f"the deep page is not {DEPTH:,} rows down (gap {gap} s): the benchmark is broken")
    first_ms: list[float] = []
    deep_ms: list[float] = []
    for _ in range(10):  # warm-up: connections, caches
        await stub.ListFiles(first)
        await stub.ListFiles(deep)
    for _ in range(PAGE_FETCHES):
        for request, samples in ((first, first_ms), (deep, deep_ms)):
            started = time.perf_counter()
            await stub.ListFiles(request)
            samples.append((time.perf_counter() - started) * 1000)

    async def create(n: int) -> None:
        await stub.CreateFile(
            pb.CreateFileRequest(
                file=resources_pb2.File(
                    tenant=TENANT,
                    owner=OWNERS[n % len(OWNERS)],
                    name=f"new-{n}.txt",
                    declared_content_type="text/plain",
                    size=n,
                    labels={"bench": "create"},
                )
            )
        )

    await asyncio.gather(*(create(n) for n in range(CREATE_CONCURRENCY)))  # warm-up
    queue = iter(range(CREATE_CONCURRENCY, CREATE_CONCURRENCY + CREATES))

    async def worker() -> None:
        for n in queue:
            await create(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    create_per_s = CREATES / (time.perf_counter() - started)
    figures = Figures(
        first_page_ms=statistics.median(first_ms),
        deep_page_ms=statistics.median(deep_ms),
        create_per_s=create_per_s,
    )
    print(
        f"  ListFiles page_size={PAGE_SIZE}: page 1 median {figures.first_page_ms:.2f} ms "
        f"(p90 {statistics.quantiles(first_ms, n=10)[-1]:.2f}), depth {DEPTH:,} median "
        f"{figures.deep_page_ms:.2f} ms (p90 {statistics.quantiles(deep_ms, n=10)[-1]:.2f}), "
        f"ratio {figures.depth_ratio:.2f}"
    )
    print(f"  CreateFile: {CREATES} calls, {CREATE_CONCURRENCY} in flight: {create_per_s:.0f}/s")
    return figures


async def bench(name: str, url: str, rows: int, home: Path) -> Figures:
    print(f"{name}: migrating and filling {rows:,} file rows", flush=True)
    started = time.perf_counter()
    await upgrade_to_head(url)
    await (fill_sqlite(url, rows) if name == "sqlite" else fill_postgres(url, rows))
    print(f"  filled in {time.perf_counter() - started:.1f} s", flush=True)
    config = StackConfig(
        home=home,
        ports=StackPorts.free(),
        components=("metadata",),
        database_url=url,
        log_level="warning",
        ready_timeout_s=120.0,
    )
    async with Stack(config) as stack:
        token = mint_token(
            stack.endpoints.auth_secret, subject="service:bench", tenant="*", roles=["service"]
        )
        channel: grpc.aio.Channel = insecure_channel(stack.endpoints.metadata_addr, token=lambda: token)
        try:
            return await measure(metadata_service_pb2_grpc.MetadataServiceStub(channel))
        finally:
            await channel.close()


async def main() -> int:
    rows = int(os.environ.get("BENCH_ROWS", "1000000"))
    if rows < DEPTH + 2 * PAGE_SIZE:
        raise SystemExit(f"BENCH_ROWS must be at least {DEPTH + 2 * PAGE_SIZE}")
    with tempfile.TemporaryDirectory(prefix="filestore-bench-metadata-") as scratch:
        root = Path(scratch)
        sqlite = await bench("sqlite", f"sqlite+aiosqlite:///{root / 'bench.db'}", rows, root / "sqlite")
        async with scratch_postgres() as url:
            postgres = await bench("postgresql", url, rows, root / "postgresql")
    print(
        f"RESULT sqlite_depth_ratio={sqlite.depth_ratio:.2f} postgres_depth_ratio={postgres.depth_ratio:.2f} "
        f"create_per_s_sqlite={sqlite.create_per_s:.0f} create_per_s_postgres={postgres.create_per_s:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
