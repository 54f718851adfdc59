"""Supervision of services, with a fake health-serving script instead of the real services: start-up,
kill and restart by hand, and `filestore-stack run` restarting what crashes until it keeps crashing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from filestore.stack import (
    RestartPolicy,
    Stack,
    StackConfig,
    StackConfigError,
    StackPortInUseError,
    StackStartError,
    load_stack_json,
    pid_alive,
)
from filestore.stack.probes import probe_grpc_health

MakeConfig = Callable[..., StackConfig]


async def test_services_start_serving_get_their_env_and_survive_kill_and_restart(
    make_config: MakeConfig, fake_command: list[str], tmp_path: Path
) -> None:
    dump = tmp_path / "upload-env.json"
    config = make_config(
        components=("metadata", "upload"),
        commands={"metadata": fake_command, "upload": fake_command},
        extra_env={"upload": {"FAKE_ENV_DUMP": str(dump), "FILESTORE_UPLOAD_TTL_S": "5"}},
    )
    async with Stack(config) as stack:
        endpoints = stack.endpoints
        for service in ("metadata", "upload"):
            assert await probe_grpc_health(endpoints.service_addr(service)) == (True, "health: SERVING")

        env = json.loads(dump.read_text())
        assert env["FILESTORE_LISTEN"] == endpoints.upload_addr
        assert env["FILESTORE_METADATA_ADDR"] == endpoints.metadata_addr
        assert env["FILESTORE_S3_ENDPOINT"] == endpoints.s3_endpoint
        # The broker's own, least-privilege storage identity, not the operators' full-rights one.
        assert (env["FILESTORE_S3_ACCESS_KEY"], env["FILESTORE_S3_SECRET_KEY"]) == (
            endpoints.credentials.service_s3_keys["upload"]
        )
        assert env["FILESTORE_S3_ACCESS_KEY"] != endpoints.s3_access_key
        assert env["FILESTORE_S3_REGION"] == "us-east-1"
        assert env["FILESTORE_NATS_URL"] == endpoints.nats_url
        assert env["FILESTORE_AUTH_SECRET"] == endpoints.auth_secret
        # A session key of its own, not one derived from the auth secret.
        assert len(env["FILESTORE_UPLOAD_SESSION_KEY"]) >= 32
        assert env["FILESTORE_UPLOAD_SESSION_KEY"] == endpoints.credentials.upload_session_key
        assert env["FILESTORE_UPLOAD_SESSION_KEY"] != endpoints.auth_secret
        assert env["FILESTORE_UPLOAD_TTL_S"] == "5"
        assert "FILESTORE_DATABASE_URL" not in env  # only metadata touches the database

        old_pid = stack.pids["upload"]
        await stack.kill("upload")
        assert not pid_alive(old_pid)
        assert "upload" not in stack.pids
        ok, _ = await probe_grpc_health(endpoints.upload_addr)
        assert not ok

        await stack.restart("upload")
        assert stack.pids["upload"] != old_pid
        assert await probe_grpc_health(endpoints.upload_addr) == (True, "health: SERVING")
        pids = dict(stack.pids)

    assert not any(pid_alive(pid) for pid in pids.values())
    assert stack.pids == {}
    log_text = stack.log_path("upload").read_text()
    assert log_text.count("fake_service_started") == 2


async def test_a_service_dying_at_start_fails_with_its_log_and_stops_the_rest(
    make_config: MakeConfig, fake_command: list[str]
) -> None:
    config = make_config(
        components=("metadata", "upload"),
        commands={"metadata": fake_command, "upload": fake_command},
        extra_env={"upload": {"FAKE_EXIT_AT_START": "3"}},
    )
    stack = Stack(config)
    with pytest.raises(StackStartError, match="upload exited with status 3 during start-up") as failure:
        await stack.start()
    assert "fake_service_refuses_to_start" in str(failure.value)
    assert failure.value.component == "upload"
    metadata_pid = stack.process("metadata").pid
    assert metadata_pid is not None
    assert not pid_alive(metadata_pid)


async def test_a_service_never_serving_times_out(make_config: MakeConfig, fake_command: list[str]) -> None:
    config = make_config(
        components=("metadata",),
        commands={"metadata": fake_command},
        extra_env={"metadata": {"FAKE_NOT_SERVING": "1"}},
        ready_timeout_s=1.5,
    )
    stack = Stack(config)
    with pytest.raises(StackStartError, match=r"metadata was not ready after 1.5s \(health: NOT_SERVING\)"):
        await stack.start()
    assert stack.pids == {}


async def test_port_in_use_stops_start_up_before_anything_starts(
    make_config: MakeConfig, fake_command: list[str]
) -> None:
    config = make_config(
        components=("metadata", "upload"), commands={"metadata": fake_command, "upload": fake_command}
    )
    with socket.socket() as squatter:
        squatter.bind((config.host, config.ports.upload))
        squatter.listen()
        stack = Stack(config)
        with pytest.raises(StackPortInUseError) as failure:
            await stack.start()
    assert str(failure.value) == (
        f"port {config.ports.upload} (upload) on 127.0.0.1 is already in use; set FILESTORE_STACK_UPLOAD_PORT"
    )
    assert stack.pids == {}
    assert not config.paths.log("metadata").exists()  # metadata, first in order, never started


async def test_one_home_serves_one_stack_at_a_time(make_config: MakeConfig, fake_command: list[str]) -> None:
    config = make_config(components=("metadata",), commands={"metadata": fake_command})
    async with Stack(config):
        other = Stack(config.with_ports(type(config.ports).free()))
        with pytest.raises(StackConfigError, match="already used by another running stack"):
            await other.start()


def test_children_die_with_a_killed_parent(tmp_path: Path, fake_command: list[str]) -> None:
    """The parent gets SIGKILL, so no Python cleanup runs; the kernel must end the children."""
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signals are Linux only")
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, json, sys
            from pathlib import Path
            from filestore.stack import Stack, StackConfig, StackPorts

            async def main():
                config = StackConfig(
                    home=Path({str(tmp_path / "home")!r}), ports=StackPorts.free(),
                    components=("metadata",), commands={{"metadata": {fake_command!r}}},
                )
                stack = Stack(config)
                await stack.start()
                print(json.dumps(stack.pids), flush=True)
                await asyncio.sleep(60)

            asyncio.run(main())
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids: dict[str, int] = json.loads(parent.stdout.readline())
        assert pid_alive(pids["metadata"])
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while pid_alive(pids["metadata"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pids["metadata"])


class ForegroundRun:
    """``filestore-stack run`` (its ``run_in_foreground``) in a process of its own, with fake services
    (the command line cannot swap commands), its stderr in a file the test reads as it grows."""

    def __init__(self, tmp_path: Path, fake_command: list[str], policy: RestartPolicy) -> None:
        self.home = tmp_path / "home"
        self.crash_file = tmp_path / "crash-now"
        self.stderr_path = tmp_path / "stderr.txt"
        script = tmp_path / "run.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import asyncio, sys
                from pathlib import Path
                from filestore.stack import RestartPolicy, StackConfig, StackPorts
                from filestore.stack.__main__ import run_in_foreground

                config = StackConfig(
                    home=Path({str(self.home)!r}), ports=StackPorts.free(),
                    components=("metadata", "upload"),
                    commands={{"metadata": {fake_command!r}, "upload": {fake_command!r}}},
                    extra_env={{"upload": {{"FAKE_CRASH_WHEN_EXISTS": {str(self.crash_file)!r}}}}},
                    restart={policy!r},
                )
                sys.exit(asyncio.run(run_in_foreground(config)))
                """
            )
        )
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=stderr
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def until(self, condition: Callable[[], bool], what: str, within_s: float = 30.0) -> None:
        """Wait for ``condition`` while the runner runs (the runner's files announce nothing)."""
        deadline = time.monotonic() + within_s
        while not condition():
            assert self.process.poll() is None, f"the runner exited early: {self.stderr}"
            assert time.monotonic() < deadline, f"{what} did not happen within {within_s}s: {self.stderr}"
            time.sleep(0.05)

    def pids(self) -> dict[str, int]:
        try:
            return load_stack_json(self.home / "stack.json").pids
        except StackConfigError:  # not written yet
            return {}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


async def test_run_restarts_a_killed_service_and_says_so_in_one_line(
    tmp_path: Path, fake_command: list[str]
) -> None:
    run = ForegroundRun(tmp_path, fake_command, RestartPolicy())
    try:
        run.until(lambda: set(run.pids()) == {"metadata", "upload"}, "start-up")
        before = run.pids()
        os.kill(before["upload"], signal.SIGKILL)

        run.until(lambda: run.pids().get("upload", before["upload"]) != before["upload"], "the restart")
        after = run.pids()
        info = load_stack_json(run.home / "stack.json")
        assert await probe_grpc_health(info.endpoints.upload_addr) == (True, "health: SERVING")
        assert after["metadata"] == before["metadata"]  # the others were left alone
        assert pid_alive(after["metadata"])
        log = run.home / "logs" / "upload.log"
        lines = run.stderr.splitlines()
        assert (
            f"filestore-stack: upload (pid {before['upload']}) was killed by SIGKILL; restarting it in 1s "
            f"(crash 1 within 300s; the stack gives up at 5); log: {log}"
        ) in lines
        assert f"filestore-stack: upload is back (pid {after['upload']})" in lines
    finally:
        status = run.stop()
    assert status == 0
    assert not any(pid_alive(pid) for pid in after.values())


async def test_run_gives_up_on_a_service_that_keeps_crashing(tmp_path: Path, fake_command: list[str]) -> None:
    policy = RestartPolicy(max_crashes=3, window_s=60.0, first_delay_s=0.1, max_delay_s=0.2)
    run = ForegroundRun(tmp_path, fake_command, policy)
    try:
        run.until(lambda: set(run.pids()) == {"metadata", "upload"}, "start-up")
        started = run.pids()
        # From now on every upload process crashes as soon as it serves.
        run.crash_file.touch()
        status = run.process.wait(timeout=60)
    finally:
        run.stop()
    assert status == 1
    stderr = run.stderr
    assert stderr.count("; restarting it in") == 2
    log = run.home / "logs" / "upload.log"
    giving_up = [line for line in stderr.splitlines() if "giving up" in line]
    assert len(giving_up) == 1
    assert giving_up[0].startswith("filestore-stack: upload ")
    assert giving_up[0].endswith(
        f": 3 crashes within 60s; giving up and stopping the stack; last lines of {log}:"
    )
    assert "fake_service_crashing" in stderr  # the tail of its log follows
    assert not pid_alive(started["metadata"])
    assert not (run.home / "stack.json").exists()
