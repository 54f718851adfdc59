"""One supervised child process: its own process group, its log file, and a guaranteed end.

Three layers make sure no child outlives its parent:
1. :meth:`ManagedProcess.stop` (SIGTERM to the group, then SIGKILL) from ``Stack.stop``;
2. an ``atexit`` hook that does the same, synchronously, for anything still registered;
3. on Linux, the child is started through ``setpriv --pdeathsig TERM`` so the kernel signals it
   when the parent dies without running Python cleanup (SIGKILL, a crash). Go binaries cannot
   watch their parent themselves, hence the kernel's help. The death signal fires when the
   *thread* that spawned the child ends, so spawn from a long-lived thread (the event loop's).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

__all__ = ["ManagedProcess", "exit_description", "find_executable", "pid_alive", "tail"]

log = logging.getLogger("filestore.stack")

_SETPRIV: Final = shutil.which("setpriv") if sys.platform.startswith("linux") else None
_POLL_S: Final = 0.05

# Every child that may still be running, by pid, for the atexit hook.
_live: dict[int, ManagedProcess] = {}


def find_executable(name: str) -> str | None:
    """``name`` from the running interpreter's bin directory (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    # Daemons such as clamd live in sbin, which a non-root PATH often leaves out.
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may itself contain ")".
    return stat.rpartition(")")[2].split()[0] != "Z"


def exit_description(returncode: int) -> str:
    """How a process ended, as a user reads it: "exited with status 3", "was killed by SIGKILL"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return f"(no log at {path})"
    text = data.decode("utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(text) if text else f"({path} is empty)"


class ManagedProcess:
    """A child process in its own process group, with stdout and stderr appended to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running (or never started); the exit status once it ended."""
        return None if self._popen is None else self._popen.poll()

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = list(self.argv)
        if _SETPRIV is not None:
            argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
        # Appending keeps earlier runs' logs; the marker shows where this one starts.
        with self.log_path.open("ab") as log_file:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log_file.write(f"--- filestore-stack: starting {self.name} at {stamp} ---\n".encode())
            log_file.flush()
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                close_fds=True,
            )
        _live[self._popen.pid] = self
        log.debug("started %s pid=%d argv=%s", self.name, self._popen.pid, self.argv)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the whole process group, if the leader has not been reaped yet.

        Until it is reaped, its pid (= the group id) cannot be reused, so this never hits a stranger.
        """
        if self._popen is None or self._popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    async def wait(self, within_s: float | None = None, *, poll_s: float = _POLL_S) -> int | None:
        """The exit status, or None if still running after ``within_s`` seconds (looking every
        ``poll_s``: a long watch can afford to look less often)."""
        if self._popen is None:
            return None
        deadline = None if within_s is None else time.monotonic() + within_s
        while (code := self._popen.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await asyncio.sleep(poll_s)
        self._reaped()
        return code

    async def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s`` seconds; returns the exit status."""
        self.signal(signal.SIGTERM)
        code = await self.wait(grace_s)
        if code is None:
            log.warning("%s did not stop within %.1fs; killing it", self.name, grace_s)
            return await self.kill()
        return code

    async def kill(self) -> int | None:
        """SIGKILL the process group and reap the leader."""
        self.signal(signal.SIGKILL)
        return await self.wait()

    def _reaped(self) -> None:
        if self._popen is None:
            return
        pid = self._popen.pid
        if _live.pop(pid, None) is not None:
            # Grandchildren (a worker's helper tools) share the group; the leader has just been
            # reaped, so the group id is still this group's for as long as any member lives.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def stop_now(self, timeout: float) -> None:
        """Synchronous stop for interpreter exit, when no event loop can be trusted."""
        if self._popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self._popen.wait()
        self._reaped()


@atexit.register
def _stop_leftovers() -> None:
    leftovers = list(_live.values())
    if not leftovers:
        return
    for proc in leftovers:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + 8.0
    for proc in leftovers:
        proc.stop_now(max(0.1, deadline - time.monotonic()))
