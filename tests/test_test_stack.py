"""`make test-stack` (scripts/test_stack.py): the suite against a stack it did not start, described by a
stack.json or by FILESTORE_EXTERNAL_* variables; without either, and without a Docker engine, it says so
and fails. The external runs here aim a nested pytest at this session's own stack."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from filestore.stack import Stack

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "test_stack.py"
NESTED_TIMEOUT_S = 240.0
# One test that needs the stack and one that starts its own processes (deselected externally).
SELECTION = (
    "tests/test_vertical_slice.py::test_completing_twice_is_harmless",
    "tests/test_make_run.py::test_a_port_in_use_stops_start_up_with_one_clear_line",
)


def _clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any stack description of its own, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FILESTORE_", "DOCKER_", "PYTEST_"))
    }
    return {**env, **extra}


async def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), NESTED_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def _variables(stack: Stack) -> dict[str, str]:
    endpoints = stack.endpoints
    env = {f"FILESTORE_EXTERNAL_{name.upper()}": value for name, value in endpoints.to_json().items()}
    env["FILESTORE_EXTERNAL_AUTH_SECRET"] = endpoints.auth_secret
    env["FILESTORE_EXTERNAL_S3_ACCESS_KEY"] = endpoints.s3_access_key
    env["FILESTORE_EXTERNAL_S3_SECRET_KEY"] = endpoints.s3_secret_key
    if endpoints.tls is not None:
        for name in ("ca_file", "client_cert_file", "client_key_file"):
            value = getattr(endpoints.tls, name)
            if value is not None:
                env[f"FILESTORE_EXTERNAL_TLS_{name.upper()}"] = value
    return env


@pytest.mark.parametrize("described_by", ["stack-json", "variables"])
async def test_the_suite_runs_against_a_stack_it_did_not_start(
    stack: Stack, tmp_path: Path, described_by: str
) -> None:
    if described_by == "stack-json":
        env = _clean_environment(FILESTORE_STACK_JSON=str(stack.write_stack_json(tmp_path / "stack.json")))
    else:
        env = _clean_environment(**_variables(stack))
    code, output = await _run(env, *SELECTION, "-v", "-p", "no:cacheprovider")
    assert code == 0, output
    assert "test_completing_twice_is_harmless[external] PASSED" in output
    assert "1 passed, 1 deselected" in output
    assert "[sqlite]" not in output
    assert "[postgresql]" not in output


async def test_an_unusable_stack_description_fails_the_run(tmp_path: Path) -> None:
    env = _clean_environment(FILESTORE_STACK_JSON=str(tmp_path / "missing.json"))
    code, output = await _run(env, SELECTION[0], "-q", "-p", "no:cacheprovider")
    assert code != 0
    assert f"no stack description at {tmp_path / 'missing.json'}" in output

    env = _clean_environment(FILESTORE_EXTERNAL_UPLOAD_ADDR="127.0.0.1:1")
    code, output = await _run(env, SELECTION[0], "-q", "-p", "no:cacheprovider")
    assert code != 0
    assert "an external stack needs FILESTORE_EXTERNAL_METADATA_ADDR, " in output
    assert "FILESTORE_EXTERNAL_UPLOAD_ADDR" not in output.split("needs", 1)[1]


async def test_without_a_stack_or_a_docker_engine_it_says_so_and_fails(tmp_path: Path) -> None:
    env = _clean_environment(DOCKER_HOST=f"unix://{tmp_path / 'no-docker.sock'}")
    code, output = await _run(env)
    assert code == 3
    assert "no Docker engine is reachable" in output
    assert "FILESTORE_STACK_JSON" in output
    assert "Nothing was tested." in output
    assert "passed" not in output
