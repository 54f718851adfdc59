"""``filestore-stack run`` and ``status`` as a user runs them, with only NATS to stay fast."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from filestore.stack import StackPorts, load_stack_json, pid_alive, port_env_var
from filestore.stack.__main__ import main

CLI = [sys.executable, "-m", "filestore.stack"]


def cli_env(home: Path, ports: StackPorts, components: str = "nats") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILESTORE_")}
    env.update({port_env_var(name): str(port) for name, port in ports.items() if name != "admin_grpc"})
    env.update(FILESTORE_HOME=str(home), FILESTORE_STACK_COMPONENTS=components)
    return env


def wait_for(path: Path, proc: subprocess.Popen[str], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not path.exists():
        assert proc.poll() is None, f"filestore-stack exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_run_status_and_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = cli_env(home, StackPorts.free())
    run = subprocess.Popen([*CLI, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(home / "stack.json", run)
        info = load_stack_json(home / "stack.json")
        assert info.components == ("nats",)

        status = subprocess.run(
            [*CLI, "status", "--json"], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert status.returncode == 0, status
        assert json.loads(status.stdout)["nats"]["healthy"] is True

        started = time.monotonic()
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=15)
        assert time.monotonic() - started < 15
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    assert "nats://" in out
    assert "stopped" in err
    assert not pid_alive(info.pids["nats"])
    assert not (home / "stack.json").exists()

    status = subprocess.run(
        [*CLI, "status"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert status.returncode == 1
    assert "is the stack running?" in status.stderr


def test_run_with_a_busy_port_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    ports = StackPorts.free()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports.nats))
        squatter.listen()
        run = subprocess.run(
            [*CLI, "run"],
            env=cli_env(tmp_path, ports),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"filestore-stack: port {ports.nats} (nats) on 127.0.0.1 is already in use; "
        "set FILESTORE_STACK_NATS_PORT"
    ]


def test_malformed_configuration_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("FILESTORE_HOME", str(tmp_path))
    monkeypatch.setenv("FILESTORE_STACK_S3_PORT", "eighty")
    assert main(["run"]) == 2
    assert capsys.readouterr().err.strip() == (
        "filestore-stack: configuration error: FILESTORE_STACK_S3_PORT='eighty' is not a port number"
    )


def _names(path: Path) -> set[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return {str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value}


def test_certs_issues_each_server_its_own_names_once_and_keeps_them(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    arguments = [
        "certs",
        "--dir",
        str(directory),
        "--server",
        "processor=processor,bridge",
        "--server",
        "s3=s3,",
    ]
    assert main(arguments) == 0
    assert _names(directory / "server-processor.pem") == {"processor", "bridge", "127.0.0.1", "localhost"}
    assert _names(directory / "server-s3.pem") == {"s3", "127.0.0.1", "localhost"}
    assert _names(directory / "server-metadata.pem") == {"127.0.0.1", "localhost"}
    assert (directory / "client-user.key").stat().st_mode & 0o777 == 0o600
    # nats-server's include names the node certificate for clients and routes.
    nats_config = (directory / "nats-tls.conf").read_text(encoding="utf-8")
    assert nats_config.count(str(directory / "server-nats.pem")) == 2
    # A second run (a stack started again) keeps what is still good: clients keep trusting it.
    before = {path.name: path.read_bytes() for path in directory.glob("*.pem")}
    assert main(arguments) == 0
    assert {path.name: path.read_bytes() for path in directory.glob("*.pem")} == before
    # A name asked for that a certificate lacks gets that certificate issued again, alone.
    assert main([*arguments, "--server", "s3=storage.example"]) == 0
    assert "storage.example" in _names(directory / "server-s3.pem")
    assert (directory / "server-processor.pem").read_bytes() == before["server-processor.pem"]


@pytest.mark.parametrize("server", ["metadata", "nowhere=x"])
def test_certs_refuses_a_server_it_does_not_know_or_without_names(tmp_path: Path, server: str) -> None:
    assert main(["certs", "--dir", str(tmp_path / "tls"), "--server", server]) == 2
