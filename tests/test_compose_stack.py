"""docker-compose.yml for real inside `make test`: the production shape (TLS on) built with podman
(images kept between runs are reused; `make test`'s prerequisites install podman, runc and debootstrap),
brought up, then one SDK upload to READY and its download through the published ports with the stack's
CA and the users' client certificate, and down again, volumes included. `make test-compose` runs the
whole integration suite against the same stack (README, "Compose")."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from filestore.client import AsyncClient, Endpoints
from filestore.core.auth import mint_token
from filestore.stack import load_stack_json
from filestore.stack.probes import probe_grpc_health
from filestore.v1 import resources_pb2

REPO = Path(__file__).resolve().parents[1]
#: Not `make test-compose`'s project: both may run at once on one machine.
PROJECT = "filestore-slice"
#: From nothing (no image kept) the builds take about four minutes on this machine's kind.
TIMEOUT_S = 1200


def _compose_stack_script() -> ModuleType:
    """scripts/compose_stack.py (it imports scripts/test_stack.py as a sibling)."""
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import compose_stack

    return compose_stack


async def _upload_and_download(stack_json: Path, workdir: Path) -> None:
    endpoints = load_stack_json(stack_json).endpoints
    tls = endpoints.tls
    assert tls is not None, "the compose stack runs on TLS"
    assert endpoints.s3_endpoint.startswith("https://127.0.0.1:")
    # Mutual TLS: the stack's certificates answer, plaintext does not.
    assert (await probe_grpc_health(endpoints.metadata_addr, tls=tls))[0]
    assert not (await probe_grpc_health(endpoints.metadata_addr))[0]
    token = mint_token(endpoints.auth_secret, subject="alice", tenant=f"slice-{os.getpid()}")
    client_endpoints = Endpoints(
        upload=endpoints.upload_addr,
        metadata=endpoints.metadata_addr,
        download=endpoints.download_addr,
        token=token,
        tls=tls,
    )
    body = os.urandom(256 * 1024)
    async with AsyncClient(client_endpoints, state_dir=workdir / "state") as client:
        uploaded = await client.upload(body, name="slice.bin")
        ready = await client.wait_until_processed(uploaded.file.id)
        assert (ready.status, ready.sha256) == (
            resources_pb2.FILE_STATUS_READY,
            hashlib.sha256(body).hexdigest(),
        )
        link = await client.download_url(uploaded.file.id)
        assert link.url.startswith(endpoints.s3_endpoint + "/")  # presigned over HTTPS
        downloaded = await client.download(uploaded.file.id, workdir)
    assert downloaded.path.read_bytes() == body


@pytest.mark.timeout(TIMEOUT_S)
def test_an_sdk_upload_and_download_through_the_tls_compose_stack(tmp_path: Path) -> None:
    script = _compose_stack_script()
    phases = script.Phases()
    started = time.monotonic()
    try:
        with (
            script.compose_stack("podman", phases, tmp_path, project=PROJECT) as stack_json,
            phases.phase("slice"),
        ):
            asyncio.run(_upload_and_download(stack_json, tmp_path))
    finally:
        print(f"compose slice: {phases.summary()}; {time.monotonic() - started:.0f} s in all")
