"""The Node.js client's end-to-end script (clients/node/e2e.mjs) run against a stack, as its users run
it: endpoints and token from the environment, one JSON line of results on stdout."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from filestore.stack import Stack

REPO = Path(__file__).resolve().parents[1]
E2E_SCRIPT = REPO / "clients" / "node" / "e2e.mjs"
NODE_TIMEOUT_S = 120.0


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the Node client needs Node.js 20+ (see README)")
    if not (REPO / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node_modules lacks @grpc/grpc-js: run `make node-deps`")
    return node


def tls_env(stack: Stack) -> dict[str, str]:
    """What the script connects to a TLS stack with: the CA and the user's client certificate for the
    services, and the CA trusted by Node itself for fetch() to storage. Empty for a plaintext stack."""
    tls = stack.endpoints.tls
    if tls is None or tls.ca_file is None:
        return {}
    env = {"FILESTORE_TLS_CA_FILE": tls.ca_file, "NODE_EXTRA_CA_CERTS": tls.ca_file}
    if tls.client_cert_file is not None and tls.client_key_file is not None:
        env.update(
            FILESTORE_TLS_CLIENT_CERT_FILE=tls.client_cert_file,
            FILESTORE_TLS_CLIENT_KEY_FILE=tls.client_key_file,
        )
    return env


async def run_e2e(stack: Stack, token: str, *args: str) -> tuple[int | None, bytes, bytes]:
    """The script's exit code, stdout and stderr, run with ``args`` as ``token``'s holder."""
    endpoints = stack.endpoints
    process = await asyncio.create_subprocess_exec(
        node_executable(),
        str(E2E_SCRIPT),
        *args,
        cwd=REPO,
        env={
            **os.environ,
            "FILESTORE_UPLOAD_ADDR": endpoints.upload_addr,
            "FILESTORE_METADATA_ADDR": endpoints.metadata_addr,
            "FILESTORE_DOWNLOAD_ADDR": endpoints.download_addr,
            "FILESTORE_TOKEN": token,
            **tls_env(stack),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT_S)
    return process.returncode, stdout, stderr


async def e2e_result(stack: Stack, token: str, *args: str) -> dict[str, Any]:
    """The results the script printed last, once it succeeded."""
    returncode, stdout, stderr = await run_e2e(stack, token, *args)
    assert returncode == 0, f"node e2e failed: {stderr.decode()}"
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result
