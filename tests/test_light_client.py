"""The SDK carries no server: filestore-client installs into a fresh virtual environment with
filestore-core and filestore-protos alone, none of the server kit (boto3, nats-py, OpenTelemetry,
Prometheus) comes along, and from there it uploads a file to the running stack, waits for it to be
processed and downloads it back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from filestore.core.auth import mint_token
from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2, metadata_service_pb2_grpc, resources_pb2
from tests.node import tls_env
from tests.support import stack_channel

ROOT = Path(__file__).resolve().parents[1]
#: What an SDK user installs: the client and the two packages it depends on, nothing else of ours.
CLIENT_MEMBERS = ("libs/protos", "libs/core", "libs/client")
#: Top-level modules of the server kit, which the client must not bring.
SERVER_KIT = ("boto3", "botocore", "nats", "opentelemetry", "prometheus_client", "structlog")
#: Run in the light environment: upload, wait until processed, download; print what it saw.
ROUND_TRIP = """
import hashlib, json, sys
from pathlib import Path
from filestore.client import Client, Endpoints

source, target = Path(sys.argv[1]), Path(sys.argv[2])
with Client(Endpoints.from_env()) as filestore:
    uploaded = filestore.upload(source)
    processed = filestore.wait_until_processed(uploaded.file.id)
    filestore.download(uploaded.file.id, target)
modules = sorted({name.partition(".")[0] for name in sys.modules})
print(json.dumps({
    "file_id": uploaded.file.id,
    "status": processed.status,
    "downloaded_sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
    "modules": modules,
}))
"""


def _run(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def light_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtual environment holding only the client, core and protos
    packages (built from the work tree, not editable), their dependencies at the versions uv.lock
    pins. Made once per session; uv's cache makes it a matter of seconds."""
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    home = tmp_path_factory.mktemp("light-client")
    pins = home / "pins.txt"
    # uv.lock's versions of what filestore-client needs, and nothing it does not.
    exported = ("--frozen", "--package", "filestore-client", "--no-dev", "--no-emit-workspace", "--no-hashes")
    _run(uv, "export", *exported, "--quiet", "--output-file", pins)
    _run(uv, "venv", "--quiet", "--python", sys.executable, home / "venv")
    python = home / "venv" / "bin" / "python"
    # --no-sources: the members as a user installs them, not as editable workspace members.
    members = [ROOT / member for member in CLIENT_MEMBERS]
    _run(uv, "pip", "install", "--quiet", "--no-sources", "--python", python, "--constraints", pins, *members)
    return python


def _light_env(**extra: str) -> dict[str, str]:
    """A shell without this workspace's environment: no PYTHONPATH or VIRTUAL_ENV leaking in."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {**{name: os.environ[name] for name in keep if name in os.environ}, **extra}


def test_the_client_installs_without_the_server_kit(light_python: Path) -> None:
    probe = (
        "import importlib.util, json, filestore.client, filestore.client.cli; "
        "print(json.dumps({name: importlib.util.find_spec(name) is not None for name in "
        f"{[*SERVER_KIT, 'filestore.server', 'filestore.stack']!r}}}))"
    )
    found = json.loads(_run(light_python, "-c", probe, env=_light_env()).stdout)
    assert found == {name: False for name in [*SERVER_KIT, "filestore.server", "filestore.stack"]}


async def test_the_light_client_uploads_to_the_running_stack(
    light_python: Path, stack: Stack, tmp_path: Path
) -> None:
    e = stack.endpoints
    tenant = f"light-{uuid.uuid4().hex[:8]}"
    body = os.urandom(256 * 1024)
    source = tmp_path / "report.bin"
    source.write_bytes(body)
    token = mint_token(e.auth_secret, subject="lena", tenant=tenant)
    env = _light_env(
        FILESTORE_UPLOAD_ADDR=e.upload_addr,
        FILESTORE_METADATA_ADDR=e.metadata_addr,
        FILESTORE_DOWNLOAD_ADDR=e.download_addr,
        FILESTORE_TOKEN=token,
        FILESTORE_STATE_DIR=str(tmp_path / "state"),
        **tls_env(stack),
    )
    done = await asyncio.to_thread(
        _run, light_python, "-c", ROUND_TRIP, source, tmp_path / "copy.bin", env=env
    )
    seen = json.loads(done.stdout)
    digest = hashlib.sha256(body).hexdigest()
    assert seen["status"] == resources_pb2.FILE_STATUS_READY
    assert seen["downloaded_sha256"] == digest
    assert not set(seen["modules"]) & set(SERVER_KIT)
    # The catalogue, asked from outside the light environment, holds the file as that user's.
    async with stack_channel(e, e.metadata_addr, token=lambda: token) as channel:
        stored = await metadata_service_pb2_grpc.MetadataServiceStub(channel).GetFile(
            metadata_service_pb2.GetFileRequest(file_id=seen["file_id"])
        )
    assert (stored.tenant, stored.owner, stored.name) == (tenant, "lena", "report.bin")
    assert (stored.size, stored.sha256, stored.status) == (len(body), digest, resources_pb2.FILE_STATUS_READY)
