"""The ``filestore`` command as a new user runs it, as a subprocess against the real stack: help,
upload, ls, info, share, download, rm and ``stack status``, with --json and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from filestore.stack import Stack

CLI = [sys.executable, "-m", "filestore.client"]
SUBCOMMANDS = ("upload", "download", "ls", "info", "share", "rm", "stack")


def run(*args: str | Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


@pytest.fixture
def cli_env(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """A user's shell: the stack found through its stack.json, a tenant of its own."""
    stack_json = stack.write_stack_json(tmp_path / "stack.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILESTORE_")}
    env.update(
        FILESTORE_HOME=str(stack_json.parent),
        FILESTORE_STATE_DIR=str(tmp_path / "state"),
        FILESTORE_USER="alice",
        FILESTORE_TENANT=f"cli-{uuid.uuid4().hex[:8]}",
    )
    return env


def test_help_is_enough_to_get_started() -> None:
    top = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=False)
    assert top.returncode == 0
    for word in (*SUBCOMMANDS, "exit status", "130", "FILESTORE_TOKEN", "stack.json", "--json"):
        assert word in top.stdout
    for command in SUBCOMMANDS:
        sub = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True, check=False)
        assert sub.returncode == 0, (command, sub.stderr)
        assert f"usage: filestore {command}" in sub.stdout
    usage = subprocess.run([*CLI, "upload"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2
    assert "the following arguments are required: path" in usage.stderr


def test_upload_share_download_and_delete(cli_env: dict[str, str], tmp_path: Path) -> None:
    body = os.urandom(200_000)
    source = tmp_path / "report.pdf"
    source.write_bytes(body)

    uploaded = run("upload", source, "--wait", "--label", "team=ops", "--json", env=cli_env)
    assert uploaded.returncode == 0, uploaded.stderr
    document = as_json(uploaded)
    file_id = document["file"]["id"]
    assert (document["kind"], document["file"]["status"]) == ("single", "FILE_STATUS_READY")
    assert document["file"]["labels"] == {"team": "ops"}

    listed = run("ls", "--json", env=cli_env)
    assert listed.returncode == 0
    assert [f["id"] for f in as_json(listed)["files"]] == [file_id]
    assert file_id in run("ls", env=cli_env).stdout

    info = run("info", file_id, "--json", env=cli_env)
    assert info.returncode == 0
    steps = {r["step"]: r["outcome"] for r in as_json(info)["processing"]}
    assert steps["scan"] == "STEP_OUTCOME_PASSED"

    link = run("share", file_id, "--ttl", "10m", env=cli_env)
    assert link.returncode == 0
    assert httpx.get(link.stdout.strip(), timeout=30).content == body

    granted = run("share", file_id, "--with", "bob", "--expires", "1d", "--json", env=cli_env)
    assert granted.returncode == 0, granted.stderr
    assert as_json(granted)["grant"]["principal"] == "bob"
    bob = {**cli_env, "FILESTORE_USER": "bob"}
    fetched = run("download", file_id, tmp_path / "from-alice.pdf", "--json", env=bob)
    assert fetched.returncode == 0, fetched.stderr
    assert Path(as_json(fetched)["path"]).read_bytes() == body

    removed = run("rm", file_id, env=cli_env)
    assert (removed.returncode, removed.stdout.strip()) == (0, f"deleted {file_id}")
    gone = run("info", file_id, "--json", env=cli_env)
    assert gone.returncode == 1
    assert as_json(gone)["error"]["reason"] == "FILE_NOT_FOUND"
    assert gone.stderr.strip().splitlines() == [
        f"filestore: error: FILE_NOT_FOUND: {as_json(gone)['error']['message']}"
    ]


def test_a_file_larger_than_the_part_size_goes_in_parts(cli_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(11 * 1024 * 1024))
    done = run("upload", source, "--part-size", "5MiB", "--concurrency", "2", "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    document = as_json(done)
    assert (document["kind"], document["parts_sent"], document["parts_resumed"]) == ("multipart", 3, 0)
    assert document["file"]["size"] == str(11 * 1024 * 1024)  # int64 is a string in proto JSON


def test_errors_are_one_line_with_meaningful_exit_codes(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing_file = run("upload", tmp_path / "nope.bin", env=cli_env)
    assert missing_file.returncode == 2
    assert missing_file.stderr.strip() == f"filestore: error: {tmp_path / 'nope.bin'}: no such file"

    no_stack = run("ls", "--stack-file", tmp_path / "absent.json", env=cli_env)
    assert no_stack.returncode == 2
    assert "filestore stack run" in no_stack.stderr

    refused = run("share", str(uuid.uuid4()), "--with", "bob", "--json", env=cli_env)
    assert refused.returncode == 1
    assert as_json(refused)["error"]["code"] == "NOT_FOUND"

    closed_port = {
        **cli_env,
        "FILESTORE_METADATA_ADDR": "127.0.0.1:9",
        "FILESTORE_UPLOAD_ADDR": "127.0.0.1:9",
        "FILESTORE_DOWNLOAD_ADDR": "127.0.0.1:9",
        "FILESTORE_TOKEN": "x",
    }
    unavailable = run("ls", "--json", env=closed_port)
    assert unavailable.returncode == 3
    assert as_json(unavailable)["error"]["code"] == "UNAVAILABLE"


def test_stack_status_is_the_embedded_stacks_own(cli_env: dict[str, str], tmp_path: Path) -> None:
    status = run("stack", "status", "--json", "--file", tmp_path / "stack.json", env=cli_env)
    assert status.returncode == 0, status.stderr
    report = as_json(status)
    assert {"seaweedfs", "nats", "metadata", "upload", "processor", "download"} <= report.keys()
    assert all(row["healthy"] for row in report.values())
