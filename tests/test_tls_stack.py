"""A stack with TLS everywhere (``StackConfig(tls=True)``, ``FILESTORE_STACK_TLS=1``), run for real:
the SDK, the CLI and the Node client reach READY with the stack's CA, the browser face answers
HTTPS, `filestore-stack status` sees it healthy; a plaintext client, a service client without a
client certificate and a plaintext NATS client are refused.

One stack for the module, without clamd and the demo page (what TLS changes is the services, NATS,
S3 and the face): it starts in about ten seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import nats
import pytest
from nats.errors import NoServersError

from filestore.client import AsyncClient, Endpoints
from filestore.core.auth import mint_token
from filestore.core.channels import service_channel
from filestore.core.errors import Unavailable
from filestore.core.tls import TlsSettings, client_ssl_context
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.stack.probes import probe_grpc_health
from filestore.v1 import metadata_service_pb2, metadata_service_pb2_grpc, resources_pb2
from tests.cli import as_json, run, user_shell
from tests.node import e2e_result
from tests.support import service_token

pytestmark = pytest.mark.local_stack

COMPONENTS = ("seaweedfs", "nats", "metadata", "upload", "processor", "download", "edge")
MISSING_FILE = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
async def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = StackConfig(
        home=tmp_path_factory.mktemp("tls-stack"), ports=StackPorts.free(), components=COMPONENTS, tls=True
    )
    async with Stack(config) as stack:
        stack.write_stack_json()
        yield stack


def _tls(stack: Stack) -> TlsSettings:
    tls = stack.endpoints.tls
    assert tls is not None
    assert tls.ca_file is not None
    return tls


async def test_stack_json_names_the_ca_and_every_endpoint_is_tls(tls_stack: Stack) -> None:
    described = json.loads(tls_stack.paths.stack_json.read_text())
    tls = _tls(tls_stack)
    assert described["tls"] == {
        "ca_file": str(tls_stack.paths.tls / "ca.pem"),
        "client_cert_file": tls.client_cert_file,
        "client_key_file": tls.client_key_file,
    }
    assert described["s3_endpoint"].startswith("https://")
    assert described["edge_url"].startswith("https://")
    assert described["nats_url"].startswith("tls://")
    assert described["nats_monitor_url"].startswith("https://")
    status = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "filestore.stack",
        "status",
        "--json",
        "--file",
        str(tls_stack.paths.stack_json),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(status.communicate(), 60)
    assert status.returncode == 0, (stdout + stderr).decode()
    report = json.loads(stdout)
    assert {name: row["healthy"] for name, row in report.items()} == dict.fromkeys(COMPONENTS, True), report


async def test_an_sdk_upload_reaches_ready_and_comes_back_over_https(
    tls_stack: Stack, tmp_path: Path
) -> None:
    endpoints = Endpoints.from_stack_json(tls_stack.paths.stack_json, tenant=f"tls-{uuid.uuid4().hex[:8]}")
    assert endpoints.tls == _tls(tls_stack)
    body = os.urandom(300_000)
    source = tmp_path / "secret.bin"
    source.write_bytes(body)
    async with AsyncClient(endpoints, state_dir=tmp_path / "state") as client:
        uploaded = await client.upload(source)
        settled = await client.wait_until_processed(uploaded.file.id, timeout_s=60)
        assert settled.status == resources_pb2.FILE_STATUS_READY
        url = await client.download_url(settled.id)
        assert url.url.startswith(tls_stack.endpoints.s3_endpoint + "/")
        assert url.url.startswith("https://")
        fetched = await client.download(settled.id, tmp_path / "back.bin")
    assert fetched.path.read_bytes() == body
    # Storage over HTTPS verifies against the CA, not the system's roots alone.
    async with httpx.AsyncClient(timeout=10) as system_roots_only:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await system_roots_only.get(url.url)


async def test_the_cli_with_the_ca_file(tls_stack: Stack, tmp_path: Path) -> None:
    tls = _tls(tls_stack)
    endpoints = tls_stack.endpoints
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    shell = user_shell(tls_stack, tmp_path, tenant=tenant)
    # Explicit endpoints and token: the TLS files come from the options, not from stack.json.
    shell.update(
        FILESTORE_UPLOAD_ADDR=endpoints.upload_addr,
        FILESTORE_METADATA_ADDR=endpoints.metadata_addr,
        FILESTORE_DOWNLOAD_ADDR=endpoints.download_addr,
        FILESTORE_TOKEN=mint_token(endpoints.auth_secret, subject="alice", tenant=tenant),
    )
    source = tmp_path / "notes.txt"
    source.write_text("over TLS\n" * 100)
    assert tls.ca_file is not None
    assert tls.client_cert_file is not None
    assert tls.client_key_file is not None
    files = (
        "--ca-file",
        tls.ca_file,
        "--client-cert",
        tls.client_cert_file,
        "--client-key",
        tls.client_key_file,
    )
    uploaded = run("upload", source, "--wait", "--json", *files, env=shell)
    assert uploaded.returncode == 0, uploaded.stderr
    assert as_json(uploaded)["file"]["status"] == "FILE_STATUS_READY"
    file_id = as_json(uploaded)["file"]["id"]
    # The same through FILESTORE_TLS_* instead of options.
    by_env = {
        **shell,
        "FILESTORE_TLS_CA_FILE": tls.ca_file,
        "FILESTORE_TLS_CLIENT_CERT_FILE": tls.client_cert_file,
        "FILESTORE_TLS_CLIENT_KEY_FILE": tls.client_key_file,
    }
    fetched = run("download", file_id, tmp_path / "copy.txt", "--json", env=by_env)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "copy.txt").read_bytes() == source.read_bytes()
    # Without the CA the services' certificates cannot be verified: unavailable, exit 3.
    refused = run("info", file_id, "--json", env=shell)
    assert refused.returncode == 3, refused.stdout + refused.stderr


async def test_the_node_client_with_the_ca(tls_stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "node.bin"
    body = os.urandom(50_000)
    source.write_bytes(body)
    token = mint_token(tls_stack.endpoints.auth_secret, subject="nina", tenant=f"node-{uuid.uuid4().hex[:8]}")
    result = await e2e_result(tls_stack, token, "--in", str(source), "--out", str(tmp_path / "node.out"))
    assert result["status"] == "FILE_STATUS_READY"
    assert result["downloaded_sha256"] == result["uploaded_sha256"]
    assert (tmp_path / "node.out").read_bytes() == body


async def test_the_browser_face_answers_https(tls_stack: Stack) -> None:
    tls = _tls(tls_stack)
    edge = tls_stack.endpoints.edge_url
    assert edge.startswith("https://")
    token = mint_token(tls_stack.endpoints.auth_secret, subject="alice", tenant=f"web-{uuid.uuid4().hex[:8]}")
    # A browser presents no client certificate: trusting the CA is enough for the face.
    async with httpx.AsyncClient(verify=client_ssl_context(ca_file=tls.ca_file), timeout=30) as http:
        assert (await http.get(f"{edge}/healthz")).status_code == 200
        # Through the face to metadata, which it reaches over mutual TLS with a certificate of its own.
        answer = await http.post(
            f"{edge}/filestore.v1.MetadataService/GetFile",
            json={"fileId": MISSING_FILE},
            headers={"Authorization": f"Bearer {token}", "Connect-Protocol-Version": "1"},
        )
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == "not_found"
        # Plain HTTP to the face's port is not served.
        with pytest.raises(httpx.HTTPError):
            await http.get(edge.replace("https://", "http://") + "/healthz")


async def test_a_plaintext_client_is_refused(tls_stack: Stack) -> None:
    for service in ("metadata", "upload", "processor", "download"):
        address = tls_stack.endpoints.service_addr(service)
        assert await probe_grpc_health(address) == (False, "health: UNAVAILABLE")
        assert (await probe_grpc_health(address, tls=_tls(tls_stack)))[0]
    plaintext = Endpoints.from_stack_json(tls_stack.paths.stack_json)
    async with AsyncClient(Endpoints(**{**vars(plaintext), "tls": None})) as client:
        with pytest.raises(Unavailable):
            await client.get_file(MISSING_FILE)


async def _get_missing_file(stack: Stack, tls: TlsSettings) -> grpc.StatusCode:
    token = service_token(stack)
    async with service_channel(stack.endpoints.metadata_addr, token=lambda: token, tls=tls) as channel:
        stub = metadata_service_pb2_grpc.MetadataServiceStub(channel)
        try:
            await stub.GetFile(metadata_service_pb2.GetFileRequest(file_id=MISSING_FILE), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_metadata_demands_a_client_certificate(tls_stack: Stack) -> None:
    tls = _tls(tls_stack)
    # A caller holding the service token but no certificate never reaches the servicer...
    assert await _get_missing_file(tls_stack, TlsSettings(ca_file=tls.ca_file)) == grpc.StatusCode.UNAVAILABLE
    # ...one with a certificate from the CA does (and learns the file does not exist).
    assert await _get_missing_file(tls_stack, tls) == grpc.StatusCode.NOT_FOUND


async def test_nats_refuses_plaintext_and_clients_without_a_certificate(tls_stack: Stack) -> None:
    tls = _tls(tls_stack)
    url = tls_stack.endpoints.nats_url
    host, port = url.removeprefix("tls://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        info = json.loads((await asyncio.wait_for(reader.readline(), 5)).removeprefix(b"INFO "))
        assert info["tls_required"] is True
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        # A client that goes on in plaintext gets no PONG: the server closes the connection.
        answer = await asyncio.wait_for(reader.read(), 10)
        assert b"PONG" not in answer
    finally:
        writer.close()

    async def connect(context: ssl.SSLContext) -> None:
        client = await nats.connect(
            servers=[url],
            tls=context,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
        )
        await client.close()

    with pytest.raises((NoServersError, ssl.SSLError, OSError)):
        await connect(client_ssl_context(ca_file=tls.ca_file))  # TLS, but no client certificate
    await connect(tls.client_context())
