"""Keeping a running stack up: what ``filestore-stack run`` does while it waits for Ctrl-C.

A component that exits while the stack runs (a crash, the OOM killer, somebody's ``kill``) is started
again on its ports after a backoff, as systemd or Kubernetes would restart a service of a supervised
deployment; the others keep running and reconnect to it (the services retry NATS, storage and metadata
by themselves). Infrastructure is restarted too: SeaweedFS, NATS and clamd keep their state under
``FILESTORE_HOME``, and the fault-injection tests restart each of them under load. One component that
keeps crashing (:class:`RestartPolicy`) ends the stack with :class:`StackCrashLoopError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from filestore.stack.config import RestartPolicy
from filestore.stack.errors import StackConfigError, StackCrashLoopError, StackStartError
from filestore.stack.process import exit_description, tail
from filestore.stack.stack import Stack

__all__ = ["supervise"]

#: How often each component's process is looked at; a crash waits at most this long to be seen.
POLL_INTERVAL_S = 0.5
_LOG_TAIL_LINES = 30


async def supervise(
    stack: Stack, *, say: Callable[[str], None], restarted: Callable[[str], object] = lambda _: None
) -> None:
    """Restart the stack's components as they exit, until cancelled.

    ``say`` gets one line per crash (the component, its pid, how it ended, when it restarts, its log)
    and one when it is back; ``restarted(component)`` runs after each successful restart (the CLI
    rewrites stack.json there, whose pids changed). Raises :class:`StackCrashLoopError` when a
    component crashes ``max_crashes`` times within the policy's window; the caller stops the stack.
    """
    watchers = [
        asyncio.create_task(_Watcher(stack, component, say=say, restarted=restarted).run())
        for component in stack.components
    ]
    try:
        done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # raises the crash loop
    finally:
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _Watcher:
    """One component: wait for its process to end, restart it after the backoff, count the crashes."""

    def __init__(
        self,
        stack: Stack,
        component: str,
        *,
        say: Callable[[str], None],
        restarted: Callable[[str], object],
    ) -> None:
        self._stack = stack
        self._component = component
        self._policy: RestartPolicy = stack.config.restart
        self._say = say
        self._restarted = restarted
        self._crashes: deque[float] = deque()

    async def run(self) -> None:
        while True:
            proc = self._stack.process(self._component)
            # Reaps it once it ends, and ends whatever else was left in its process group.
            returncode = await proc.wait(poll_s=POLL_INTERVAL_S)
            pid = proc.pid
            how = exit_description(returncode) if returncode is not None else "ended"
            await self._restart(f"{self._component} (pid {pid}) {how}")

    async def _restart(self, what_happened: str) -> None:
        """Back off, start the component again; a failed start is one more crash, and so on."""
        while True:
            crashes = self._count_crash()
            log_path = self._stack.log_path(self._component)
            if crashes >= self._policy.max_crashes:
                raise StackCrashLoopError(
                    self._component,
                    f"{what_happened}: {crashes} crashes within {self._policy.window_s:g}s; giving up "
                    f"and stopping the stack; last lines of {log_path}:\n{tail(log_path, _LOG_TAIL_LINES)}",
                )
            delay = self._policy.delay_s(crashes)
            self._say(
                f"{what_happened}; restarting it in {delay:g}s (crash {crashes} within "
                f"{self._policy.window_s:g}s; the stack gives up at {self._policy.max_crashes}); "
                f"log: {log_path}"
            )
            await asyncio.sleep(delay)
            # A start that fails is no better than a crash, and counts as one.
            try:
                await self._stack.restart(self._component)
            except StackStartError as failed:  # died, or not ready in time (and stopped)
                what_happened = f"{self._component} {failed.cause}"
            except StackConfigError as failed:  # a port of its taken meanwhile, its executable gone
                what_happened = f"{self._component} could not start again: {failed}"
            else:
                self._say(f"{self._component} is back (pid {self._stack.process(self._component).pid})")
                self._restarted(self._component)
                return

    def _count_crash(self) -> int:
        """Record a crash now; answers how many fell within the window."""
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes[0] < now - self._policy.window_s:
            self._crashes.popleft()
        return len(self._crashes)
