"""The ``filestore`` command as a new user runs it, as a subprocess against the real stack: help,
upload, ls, info, share, download, rm, ``stack status`` and ``fsck``, with --json and exit codes."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from filestore.stack import Stack
from tests.cli import CLI, as_json, run, user_shell
from tests.storage import admin_storage

SUBCOMMANDS = ("upload", "download", "ls", "info", "share", "rm", "stack", "fsck")


@pytest.fixture
def cli_env(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """A user's shell: the stack found through its stack.json, a tenant of its own."""
    return user_shell(stack, tmp_path, tenant=f"cli-{uuid.uuid4().hex[:8]}")


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
    done = run(
        "upload",
        source,
        "--part-size",
        "5MiB",
        "--concurrency",
        "2",
        "--part-checksum",
        "sha256",
        "--json",
        env=cli_env,
    )
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


# `stack status` reports on the processes the embedded stack records (their pids): a stack of
# containers has none, so every row would read DOWN however healthy it is.
@pytest.mark.local_stack
def test_stack_status_is_the_embedded_stacks_own(cli_env: dict[str, str], tmp_path: Path) -> None:
    status = run("stack", "status", "--json", "--file", tmp_path / "stack.json", env=cli_env)
    assert status.returncode == 0, status.stderr
    report = as_json(status)
    assert {"seaweedfs", "nats", "metadata", "upload", "processor", "download"} <= report.keys()
    assert all(row["healthy"] for row in report.values())


# The reconciler reads the stack's database itself, which an external stack need not expose.
@pytest.mark.local_stack
def test_fsck_finds_the_local_stack_by_itself_and_repairs_an_orphan(
    cli_env: dict[str, str], stack: Stack
) -> None:
    # Scoped to this test's own tenant: the session stack is shared. No grace period, or the object
    # planted a moment ago would count as an upload in flight.
    tenant = cli_env["FILESTORE_TENANT"]
    scope = ("--tenant", tenant, "--grace-s", "0")
    clean = run("fsck", *scope, env=cli_env)
    assert clean.returncode == 0, clean.stderr
    assert "no findings" in clean.stdout

    e = stack.endpoints
    operator = admin_storage(stack)
    orphan = f"originals/{tenant}/{uuid.uuid4()}"
    operator.put_object(Bucket=e.bucket, Key=orphan, Body=b"bytes no record owns")

    found = run("fsck", *scope, "--json", env=cli_env)
    assert found.returncode == 1, found.stderr
    report = as_json(found)
    assert (report["tenants"], report["repair"]) == ([tenant], False)
    assert [(f["kind"], f["subject"], f["resolution"]) for f in report["findings"]] == [
        ("orphan_object", orphan, "found")
    ]

    repaired = run("fsck", *scope, "--repair", "--json", env=cli_env)
    assert repaired.returncode == 0, repaired.stderr
    assert [f["resolution"] for f in as_json(repaired)["findings"]] == ["repaired"]
    with pytest.raises(ClientError):
        operator.head_object(Bucket=e.bucket, Key=orphan)
    assert run("fsck", *scope, env=cli_env).returncode == 0


def test_fsck_configured_by_the_environment_never_mixes_in_the_local_stack(cli_env: dict[str, str]) -> None:
    # A database named but no storage: the local stack's storage must not fill the gap (its objects
    # would all be orphans of that database), so the check cannot run.
    half = {**cli_env, "FILESTORE_DATABASE_URL": "sqlite+aiosqlite:///elsewhere.db"}
    done = run("fsck", env=half)
    assert done.returncode == 2
    assert "FILESTORE_S3_ENDPOINT" in done.stderr
