"""Run a Filestore service with a CPU profiler that a benchmark switches on and off by signal, so a
profile covers one measured phase and nothing else (start-up and imports excluded):

    python -m benchmarks.profiled <dir> <service>     # e.g. <dir> metadata

runs ``filestore.<service>``'s ``main`` as its console script would. SIGUSR1 starts a fresh
``cProfile`` profile of the main thread (where the event loop and every handler run), timed by the
thread's CPU clock (``time.thread_time``: CPU, not wall time, so the time this process waited for a
shared core is not counted). SIGUSR2 stops it and writes ``<dir>/<service>-<label>.prof``, the
label read from ``<dir>/label`` (the benchmark writes it first).
"""

from __future__ import annotations

import cProfile
import importlib
import signal
import sys
import time
from pathlib import Path
from types import FrameType


def main(directory: str, service: str) -> None:
    out = Path(directory)
    current: list[cProfile.Profile] = []

    def start(signum: int, frame: FrameType | None) -> None:
        profile = cProfile.Profile(time.thread_time)
        current[:] = [profile]
        profile.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        if not current:
            return
        profile = current.pop()
        profile.disable()
        label = (out / "label").read_text().strip() or "phase"
        final = out / f"{service}-{label}.prof"
        partial = final.with_suffix(".partial")
        profile.dump_stats(str(partial))
        partial.replace(final)  # whole, or not there: the benchmark waits for it to appear

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    module = importlib.import_module(f"filestore.{service}.__main__")
    module.main()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
