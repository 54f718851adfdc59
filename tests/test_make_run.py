"""`make run`'s command, as a user runs it: `filestore-stack run` in the foreground, every service
SERVING, stack.json written, a crashed service and a crashed NATS started again, and Ctrl-C/SIGTERM
stopping every process it started within 15 s."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from filestore.server.healthcheck import check
from filestore.stack import StackPorts, pid_alive, port_env_var
from tests.support import wait_for_path

STACK = str(Path(sys.executable).with_name("filestore-stack"))
START_TIMEOUT_S = 90.0


def _environment(home: Path, ports: StackPorts) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FILESTORE_")}
    env["FILESTORE_HOME"] = str(home)
    for name, port in ports.items():
        if name != "admin_grpc":  # derived from the admin port, not configurable on its own
            env[port_env_var(name)] = str(port)
    return env


def _wait_for_file(path: Path, process: subprocess.Popen[str]) -> dict[str, object]:
    wait_for_path(path, process, timeout_s=START_TIMEOUT_S, output=lambda: process.communicate()[1])
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_run_starts_everything_restarts_what_crashes_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stderr_path = tmp_path / "stderr.txt"
    ports = StackPorts.free()
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [STACK, "run"],
            env=_environment(home, ports),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        info = _wait_for_file(home / "stack.json", process)
        for service in ("metadata", "upload", "processor", "download"):
            assert check(str(info[f"{service}_addr"])), f"{service} is not SERVING"
        for key in ("s3_endpoint", "bucket", "nats_url", "s3_credentials_file", "auth_secret_file"):
            assert info[key], key
        assert os.stat(str(info["auth_secret_file"])).st_mode & 0o077 == 0
        pids = dict(info["pids"])  # type: ignore[call-overload]
        assert set(pids) >= {
            "seaweedfs",
            "nats",
            "metadata",
            "upload",
            "processor",
            "download",
            "edge",
            "demo",
        }
        # The demo page: listed in stack.json, and its URL printed with the endpoints (below).
        demo_url = f"http://127.0.0.1:{ports.demo}/"
        assert info["demo_url"] == demo_url

        # A crashed service and a crashed NATS are started again, each announced in one line; the
        # others keep their processes.
        for crashed in ("upload", "nats"):
            os.kill(int(pids[crashed]), signal.SIGKILL)
        restarted = _wait_for_restart(home, stderr_path, process, ("upload", "nats"))
        assert restarted["upload"] != pids["upload"]
        assert restarted["nats"] != pids["nats"]
        assert check(str(info["upload_addr"])), "upload is not SERVING again"
        assert {n: p for n, p in restarted.items() if n not in ("upload", "nats")} == {
            n: p for n, p in pids.items() if n not in ("upload", "nats")
        }
        notices = stderr_path.read_text().splitlines()
        for crashed in ("upload", "nats"):
            assert (
                f"filestore-stack: {crashed} (pid {pids[crashed]}) was killed by SIGKILL; restarting it in "
                f"1s (crash 1 within 300s; the stack gives up at 5); log: {home / 'logs' / crashed}.log"
            ) in notices
        pids = restarted

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        assert time.monotonic() - started < 15
        assert process.returncode == 0
        assert process.stdout is not None
        printed = process.stdout.read().splitlines()
        assert any(line.startswith(f"  demo page   {demo_url}  (open it in a browser") for line in printed), (
            printed
        )
        assert not [name for name, pid in pids.items() if pid_alive(int(pid))]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # State survives: the database and the object store stay under FILESTORE_HOME for the next run.
    assert (home / "metadata.db").exists()


def _wait_for_restart(
    home: Path, stderr: Path, process: subprocess.Popen[str], crashed: tuple[str, ...]
) -> dict[str, int]:
    """The pids in stack.json once the runner said each component in ``crashed`` is back (ready)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"filestore-stack exited: {stderr.read_text()[-2000:]}"
        said = stderr.read_text()
        if all(f"filestore-stack: {name} is back (pid " in said for name in crashed):
            pids: dict[str, int] = json.loads((home / "stack.json").read_text())["pids"]
            for name in crashed:
                assert f"filestore-stack: {name} is back (pid {pids[name]})" in said.splitlines()
            return pids
        time.sleep(0.2)
    raise AssertionError(f"{', '.join(crashed)} did not come back within {START_TIMEOUT_S} s")


def test_a_port_in_use_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    ports = StackPorts.free()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.upload))
        taken.listen()
        result = subprocess.run(
            [STACK, "run"],
            env=_environment(tmp_path / "home", ports),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"filestore-stack: port {ports.upload} (upload) on 127.0.0.1 is already in use; "
        "set FILESTORE_STACK_UPLOAD_PORT"
    ]
