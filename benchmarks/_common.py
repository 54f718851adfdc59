"""Shared by the benchmarks: timing with warm-up and best-of repeats, percentiles, and a throwaway
embedded stack (only the components a benchmark needs) in a temp directory."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from filestore.stack import Stack, StackConfig, StackPorts

__all__ = ["best_per_call_us", "percentile", "temporary_stack"]


def best_per_call_us(call: Callable[[], object], *, number: int, repeats: int = 7) -> float:
    """Microseconds per call: the best of ``repeats`` runs of ``number`` calls, after a warm-up.
    The best run is the one least disturbed by the rest of the machine (the usual timeit rule)."""
    for _ in range(min(number, 1000)):
        call()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(number):
            call()
        runs.append((time.perf_counter_ns() - started) / number / 1000)
    return min(runs)


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


@asynccontextmanager
async def temporary_stack(components: tuple[str, ...]) -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="filestore-bench-") as home:
        config = StackConfig(
            home=Path(home), ports=StackPorts.free(), components=components, ready_timeout_s=90.0
        )
        async with Stack(config) as stack:
            yield stack
