"""Bounded concurrency, URL expiry checks, and option validation."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf import timestamp_pb2

from filestore.client.cli import _duration, _size, build_parser
from filestore.client.transfer import MIB, TransferOptions, expiring, run_bounded, run_pipelined
from filestore.v1 import resources_pb2


async def test_run_bounded_never_exceeds_the_limit_and_does_everything() -> None:
    running = most = 0
    done: list[int] = []

    async def work(item: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running -= 1
        done.append(item)

    await run_bounded(range(20), work, 3)
    assert (sorted(done), most) == (list(range(20)), 3)


async def test_run_bounded_raises_the_first_failure_and_cancels_the_rest() -> None:
    cancelled = asyncio.Event()

    async def work(item: int) -> None:
        if item == 0:
            raise RuntimeError("part 0 failed")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(RuntimeError, match="part 0 failed"):
        await run_bounded(range(5), work, 2)
    assert cancelled.is_set()


async def test_run_pipelined_prepares_ahead_in_order_but_no_further_than_asked() -> None:
    prepared: list[int] = []
    worked: list[tuple[int, str]] = []
    running = most = most_open = 0

    async def prepare(items: list[int]) -> list[str]:
        nonlocal most_open
        prepared.extend(items)
        # Started and not yet done: the items of the lanes plus those prepared ahead.
        most_open = max(most_open, len(prepared) - len(worked))
        await asyncio.sleep(0)
        return [f"signed-{item}" for item in items]

    async def work(item: int, url: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running -= 1
        worked.append((item, url))

    await run_pipelined(range(20), prepare, work, 3, ahead=2)
    assert prepared == list(range(20))  # in order, each once
    assert sorted(worked) == [(i, f"signed-{i}") for i in range(20)]
    assert (most, most_open) == (3, 3 + 2)


async def test_run_pipelined_prepares_whole_groups_in_one_call_each() -> None:
    groups: list[list[int]] = []
    worked: list[tuple[int, str]] = []
    most_open = 0

    async def prepare(items: list[int]) -> list[str]:
        nonlocal most_open
        groups.append(items)
        most_open = max(most_open, sum(len(group) for group in groups) - len(worked))
        await asyncio.sleep(0)
        return [f"signed-{item}" for item in items]

    async def work(item: int, url: str) -> None:
        await asyncio.sleep(0)
        worked.append((item, url))

    await run_pipelined(range(11), prepare, work, 2, ahead=2, group=4)
    assert groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]  # in order, the last one short
    assert sorted(worked) == [(i, f"signed-{i}") for i in range(11)]  # each item its own value
    # The lanes' items, at least ``ahead`` more, and the rest of the group that supplied them.
    assert most_open <= 2 + 2 + 4 - 1


async def test_run_pipelined_raises_a_failed_preparation_and_cancels_the_others() -> None:
    cancelled = asyncio.Event()
    worked: list[int] = []

    async def prepare(items: list[int]) -> list[int]:
        [item] = items
        if item == 1:
            raise RuntimeError("cannot sign part 1")
        if item > 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return items

    async def work(item: int, prepared: int) -> None:
        worked.append(item)

    with pytest.raises(RuntimeError, match="cannot sign part 1"):
        await run_pipelined(range(5), prepare, work, 2, ahead=2)
    assert worked == [0]
    assert cancelled.is_set()


def test_a_url_near_or_past_its_expiry_is_renewed_before_use() -> None:
    now = time.time()
    request = resources_pb2.PresignedRequest(
        url="http://x", expire_time=timestamp_pb2.Timestamp(seconds=int(now) + 20)
    )
    assert expiring(request, 30.0, now=now)
    assert not expiring(request, 5.0, now=now)
    assert not expiring(request, -3600.0, now=now + 100)  # negative margin: never early
    assert not expiring(resources_pb2.PresignedRequest(url="http://x"), 30.0, now=now)  # unknown expiry


@pytest.mark.parametrize("options", [{"concurrency": 0}, {"chunk_size": 0}, {"part_size": 4 * MIB}])
def test_options_out_of_bounds_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must"):
        TransferOptions(**options)  # type: ignore[arg-type]


def test_cli_sizes_and_durations() -> None:
    assert (_size("16MiB"), _size("5m"), _size("1024"), _size("1GiB")) == (
        16 * MIB,
        5 * MIB,
        1024,
        1024 * MIB,
    )
    assert _duration("7d").total_seconds() == 7 * 86400
    assert _duration("10m").total_seconds() == 600
    args = build_parser().parse_args(["share", "f1", "--with", "bob", "--expires", "12h"])
    assert (args.principal, args.expires.total_seconds()) == ("bob", 43200)
