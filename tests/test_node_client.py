"""The Node.js client (clients/node, @grpc/grpc-js + @grpc/proto-loader on protos/) runs a full upload
and a download against the real stack: create, PUT to storage, complete, wait for READY, presigned GET.
The bytes Node downloaded are compared here with the ones it was given, and the file is checked through
the Python stubs too, so the test does not take the Node side's word for anything."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from filestore.core.auth import mint_token
from filestore.stack import Stack
from filestore.v1 import resources_pb2
from tests.node import e2e_result, run_e2e
from tests.support import ClientFactory, get_file


async def test_node_client_uploads_waits_for_ready_and_downloads(
    stack: Stack, client_for: ClientFactory, tmp_path: Path
) -> None:
    body = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + os.urandom(300 * 1024 + 5)
    source, target = tmp_path / "in.pdf", tmp_path / "out.pdf"
    source.write_bytes(body)
    token = mint_token(stack.endpoints.auth_secret, subject="nora", tenant="node-co")

    result = await e2e_result(
        stack,
        token,
        "--in",
        str(source),
        "--out",
        str(target),
        "--name",
        "node quarterly.pdf",
        "--content-type",
        "application/pdf",
    )

    digest = hashlib.sha256(body).hexdigest()
    assert target.read_bytes() == body
    assert result["status_after_complete"] == "FILE_STATUS_UPLOADED"
    assert result["status"] == "FILE_STATUS_READY"
    assert result["size"] == str(len(body))  # int64 as a string: exact beyond 2^53
    assert result["sha256"] == digest
    assert result["downloaded_sha256"] == digest
    assert result["content_type"] == "application/pdf"
    assert result["missing_file_error"] == {
        "code": "NOT_FOUND",
        "reason": "FILE_NOT_FOUND",
        "domain": "metadata.filestore.v1",
    }

    # The same file, seen through the Python stubs as its owner.
    file = await get_file(client_for("nora", "node-co"), str(result["file_id"]))
    assert file.status == resources_pb2.FILE_STATUS_READY
    assert file.name == "node quarterly.pdf"
    assert file.sha256 == digest
    assert file.size == len(body)


async def test_node_client_without_a_valid_token_is_refused(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"x" * 10)
    forged = mint_token("not-the-stack-secret-but-long-enough-0123456789", subject="eve", tenant="acme")
    returncode, stdout, stderr = await run_e2e(
        stack, forged, "--in", str(source), "--out", str(tmp_path / "out.bin")
    )
    assert returncode == 1
    assert stdout == b""
    assert json.loads(stderr.decode().strip().splitlines()[-1])["code"] == "UNAUTHENTICATED"
