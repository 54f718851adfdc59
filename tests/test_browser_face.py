"""The browser face (filestore-edge) against the real stack: the public RPCs over Connect (JSON and
binary) and gRPC-Web, the same answers and errors as over gRPC, internal RPCs out of reach, and the
origin allowlist on the face and on storage's presigned URLs."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from filestore.core.auth import mint_token
from filestore.core.env import Env
from filestore.edge.app import EdgeHandle, start
from filestore.edge.cors import ALLOWED_REQUEST_HEADERS
from filestore.edge.routes import PUBLIC_RPCS, UPSTREAMS
from filestore.edge.settings import EdgeSettings
from filestore.stack import Stack
from filestore.upload.app import build
from filestore.upload.settings import UploadSettings
from filestore.v1 import resources_pb2, upload_service_pb2
from tests.stacks import broker_env
from tests.storage import bucket_cors_kept
from tests.support import fresh_tenant, service_token

# The compose stack (`make test-stack`) does not run the face yet: these tests need the local one.
pytestmark = pytest.mark.local_stack

APP = "https://app.example.com"
EVIL = "https://evil.example"
CONNECT_JSON = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
CONNECT_PROTO = {"Content-Type": "application/proto", "Connect-Protocol-Version": "1"}
UPLOAD = "filestore.v1.UploadService"


def user_token(stack: Stack, tenant: str, subject: str = "alice") -> str:
    return mint_token(stack.endpoints.auth_secret, subject=subject, tenant=tenant)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call_json(
    base: str, rpc: str, body: dict[str, Any], *, token: str | None, **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{base}/{rpc}",
            content=json.dumps(body),
            headers={**CONNECT_JSON, **(bearer(token) if token else {}), **headers},
        )


def error_info(answer: httpx.Response) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo of a Connect error body."""
    details = answer.json()["details"]
    assert [d["type"] for d in details] == ["google.rpc.ErrorInfo"]
    raw = details[0]["value"]
    return error_details_pb2.ErrorInfo.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))


async def test_json_upload_through_the_face(stack: Stack) -> None:
    base, token = stack.endpoints.edge_url, user_token(stack, fresh_tenant())
    body = b"%PDF-1.4 browser upload\n" * 10
    created = await call_json(
        base,
        f"{UPLOAD}/CreateUpload",
        {
            "name": "from-the-page.pdf",
            "size": str(len(body)),
            "contentType": "application/pdf",
            "sha256": hashlib.sha256(body).hexdigest(),
        },
        token=token,
    )
    assert created.status_code == 200, created.text
    assert created.headers["content-type"] == "application/json"
    upload = created.json()["upload"]
    assert upload["kind"] == "UPLOAD_KIND_SINGLE"
    async with httpx.AsyncClient(timeout=30) as http:
        put = await http.put(upload["request"]["url"], content=body, headers=upload["request"]["headers"])
    assert put.status_code == 200, put.text
    completed = await call_json(base, f"{UPLOAD}/CompleteUpload", {"uploadId": upload["id"]}, token=token)
    assert completed.status_code == 200, completed.text
    assert completed.json()["upload"]["state"] == "UPLOAD_STATE_COMPLETED"
    assert completed.json()["file"]["sha256"] == hashlib.sha256(body).hexdigest()


async def test_binary_connect_answers_the_grpc_messages(stack: Stack) -> None:
    token = user_token(stack, fresh_tenant())
    request = upload_service_pb2.CreateUploadRequest(
        name="a.bin", size=3, content_type="application/octet-stream"
    )
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{stack.endpoints.edge_url}/{UPLOAD}/CreateUpload",
            content=request.SerializeToString(),
            headers={**CONNECT_PROTO, **bearer(token)},
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/proto"
    created = upload_service_pb2.CreateUploadResponse.FromString(answer.content)
    assert created.file.status == resources_pb2.FILE_STATUS_PENDING
    assert created.upload.request.url.startswith(stack.endpoints.s3_endpoint)


async def test_no_token_is_unauthenticated_with_the_services_reason(stack: Stack) -> None:
    answer = await call_json(stack.endpoints.edge_url, f"{UPLOAD}/GetUpload", {"uploadId": "x"}, token=None)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthenticated"
    assert error_info(answer).reason == "TOKEN_MISSING"
    forged = mint_token("another-secret-of-32-characters!!", subject="alice", tenant="acme")
    answer = await call_json(stack.endpoints.edge_url, f"{UPLOAD}/GetUpload", {"uploadId": "x"}, token=forged)
    assert (answer.json()["code"], error_info(answer).reason) == ("unauthenticated", "TOKEN_INVALID")


async def test_bad_input_is_the_services_answer(stack: Stack) -> None:
    base, token = stack.endpoints.edge_url, user_token(stack, fresh_tenant())
    negative = await call_json(
        base, f"{UPLOAD}/CreateUpload", {"name": "a", "size": "-1", "contentType": "text/plain"}, token=token
    )
    assert negative.status_code == 400
    assert (negative.json()["code"], error_info(negative).reason) == ("invalid_argument", "INVALID_SIZE")
    missing = await call_json(base, f"{UPLOAD}/GetUpload", {"uploadId": "no-such-upload"}, token=token)
    assert (missing.json()["code"], error_info(missing).reason) == ("not_found", "UPLOAD_NOT_FOUND")
    # JSON is parsed strictly: a field the message does not have is refused, not dropped.
    unknown = await call_json(base, f"{UPLOAD}/GetUpload", {"uploadId": "u", "admin": True}, token=token)
    assert (unknown.json()["code"], error_info(unknown).reason) == ("invalid_argument", "MALFORMED_REQUEST")
    # Binary bodies reach the service as sent: its own request checks answer.
    async with httpx.AsyncClient(timeout=30) as http:
        garbage = await http.post(
            f"{base}/{UPLOAD}/GetUpload", content=b"\xff\xff\xff", headers={**CONNECT_PROTO, **bearer(token)}
        )
    assert garbage.status_code == 400
    assert error_info(garbage).reason == "MALFORMED_REQUEST"


async def test_internal_rpcs_are_not_served(stack: Stack) -> None:
    """Every RPC not in PUBLIC_RPCS answers 404, even with a service token."""
    hidden = [
        f"{upstream.descriptor.full_name}/{method.name}"
        for name, upstream in UPSTREAMS.items()
        for method in upstream.descriptor.methods
        if method.name not in PUBLIC_RPCS[name]
    ]
    assert "filestore.v1.MetadataService/BeginUpload" in hidden
    assert "filestore.v1.ProcessorService/ListDeadLetters" in hidden
    token = service_token(stack)
    async with httpx.AsyncClient(timeout=30) as http:
        for rpc in hidden:
            answer = await http.post(
                f"{stack.endpoints.edge_url}/{rpc}", content=b"{}", headers={**CONNECT_JSON, **bearer(token)}
            )
            assert answer.status_code == 404, rpc
        # Nor is the health service or reflection of the gRPC ports.
        health = await http.post(
            f"{stack.endpoints.edge_url}/grpc.health.v1.Health/Check", content=b"{}", headers=CONNECT_JSON
        )
        assert health.status_code == 404


async def test_get_and_plain_grpc_are_refused(stack: Stack) -> None:
    token = user_token(stack, fresh_tenant())
    async with httpx.AsyncClient(timeout=30) as http:
        # Connect's GET would carry the request (a session token, say) in the URL.
        get = await http.get(
            f"{stack.endpoints.edge_url}/{UPLOAD}/GetUpload",
            params={"encoding": "json", "message": '{"uploadId":"x"}', "connect": "v1"},
            headers=bearer(token),
        )
        assert get.status_code == 405
        grpc_call = await http.post(
            f"{stack.endpoints.edge_url}/{UPLOAD}/GetUpload",
            content=b"\x00\x00\x00\x00\x00",
            headers={"Content-Type": "application/grpc", **bearer(token)},
        )
        assert grpc_call.status_code == 415


def grpc_web_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_web_frames(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """The data frames and the trailers of a gRPC-Web response body."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    while body:
        flags, length = body[0], struct.unpack(">I", body[1:5])[0]
        payload, body = body[5 : 5 + length], body[5 + length :]
        if flags & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


async def test_grpc_web(stack: Stack) -> None:
    token = user_token(stack, fresh_tenant())
    request = upload_service_pb2.CreateUploadRequest(name="w.txt", size=5, content_type="text/plain")
    headers = {"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"}
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{stack.endpoints.edge_url}/{UPLOAD}/CreateUpload",
            content=grpc_web_frame(request.SerializeToString()),
            headers={**headers, **bearer(token)},
        )
        refused = await http.post(
            f"{stack.endpoints.edge_url}/{UPLOAD}/CreateUpload",
            content=grpc_web_frame(request.SerializeToString()),
            headers=headers,
        )
    assert answer.status_code == 200
    messages, trailers = grpc_web_frames(answer.content)
    assert trailers["grpc-status"] == "0"
    created = upload_service_pb2.CreateUploadResponse.FromString(messages[0])
    assert created.file.name == "w.txt"
    # An error before any message: the status in the headers (or trailers), with its details.
    status_headers = {**refused.headers, **grpc_web_frames(refused.content)[1]}
    assert status_headers["grpc-status"] == "16"
    raw = status_headers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "TOKEN_MISSING"


# ------------------------------------------------------------------------------------ origins


async def preflight(url: str, origin: str, method: str = "POST", headers: str = "") -> httpx.Response:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.options(url, headers=request_headers)


CONNECT_PREFLIGHT_HEADERS = "authorization,content-type,connect-protocol-version,connect-timeout-ms"


@pytest.fixture
async def face_for_app(stack: Stack) -> AsyncIterator[EdgeHandle]:
    """A second face on the stack's services, with the page's origin allowed."""
    e = stack.endpoints
    settings = EdgeSettings.from_env(
        Env(
            {
                "FILESTORE_LISTEN": "127.0.0.1:0",
                "FILESTORE_CORS_ORIGINS": APP,
                "FILESTORE_UPLOAD_ADDR": e.upload_addr,
                "FILESTORE_METADATA_ADDR": e.metadata_addr,
                "FILESTORE_DOWNLOAD_ADDR": e.download_addr,
                "FILESTORE_PROCESSOR_ADDR": e.processor_addr,
            }
        )
    )
    handle = await start(settings)
    yield handle
    await handle.stop(1)


async def test_the_stack_face_allows_no_origin_by_default(stack: Stack) -> None:
    url = f"{stack.endpoints.edge_url}/{UPLOAD}/CreateUpload"
    answer = await preflight(url, APP, headers=CONNECT_PREFLIGHT_HEADERS)
    assert answer.status_code == 403
    assert not any(name.startswith("access-control-") for name in answer.headers)
    call = await call_json(
        stack.endpoints.edge_url, f"{UPLOAD}/GetUpload", {"uploadId": "x"}, token=None, Origin=APP
    )
    assert call.status_code == 403
    assert "access-control-allow-origin" not in call.headers
    assert (call.json()["code"], error_info(call).reason) == ("permission_denied", "ORIGIN_NOT_ALLOWED")


async def test_an_allowed_origin_gets_cors_and_others_do_not(stack: Stack, face_for_app: EdgeHandle) -> None:
    base = f"http://127.0.0.1:{face_for_app.port}"
    url = f"{base}/{UPLOAD}/CreateUpload"
    allowed = await preflight(url, APP, headers=CONNECT_PREFLIGHT_HEADERS + ",x-grpc-web,x-user-agent")
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == APP
    assert allowed.headers["access-control-allow-methods"] == "POST"
    assert {h.strip() for h in allowed.headers["access-control-allow-headers"].split(",")} == set(
        ALLOWED_REQUEST_HEADERS
    )
    assert "access-control-allow-credentials" not in allowed.headers
    # Another origin, another method, or a header a Connect client does not send: refused.
    for refused in (
        await preflight(url, EVIL, headers=CONNECT_PREFLIGHT_HEADERS),
        await preflight(url, APP, method="PUT"),
        await preflight(url, APP, headers="authorization,x-forwarded-user"),
    ):
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers

    token = user_token(stack, fresh_tenant())
    call = await call_json(base, f"{UPLOAD}/GetUpload", {"uploadId": "x"}, token=token, Origin=APP)
    assert call.status_code == 404  # not_found, readable by the page
    assert call.headers["access-control-allow-origin"] == APP
    assert "grpc-status-details-bin" in call.headers["access-control-expose-headers"].lower()
    assert error_info(call).reason == "UPLOAD_NOT_FOUND"
    evil = await call_json(base, f"{UPLOAD}/GetUpload", {"uploadId": "x"}, token=token, Origin=EVIL)
    assert evil.status_code == 403
    assert "access-control-allow-origin" not in evil.headers


@pytest.fixture
async def bucket_cors_for_app(stack: Stack) -> AsyncIterator[None]:
    """A broker started with the page's origin applies it to the bucket's CORS rules, as the stack's
    broker does at start with FILESTORE_CORS_ORIGINS; afterwards the bucket is as the stack left it."""
    async with bucket_cors_kept(stack):
        handle = await build(UploadSettings.from_env(broker_env(stack, FILESTORE_CORS_ORIGINS=APP)))
        await handle.stop(0)
        yield


async def test_storage_allows_the_page_to_put_to_a_presigned_url(
    stack: Stack, face_for_app: EdgeHandle, bucket_cors_for_app: None
) -> None:
    base, token = f"http://127.0.0.1:{face_for_app.port}", user_token(stack, fresh_tenant())
    created = await call_json(
        base,
        f"{UPLOAD}/CreateUpload",
        {"name": "p.txt", "size": "4", "contentType": "text/plain"},
        token=token,
        Origin=APP,
    )
    url = created.json()["upload"]["request"]["url"]
    assert "?" in url  # the presigned query, not a bare key
    page = await preflight(url, APP, method="PUT", headers="content-type")
    assert page.status_code == 200
    assert page.headers["access-control-allow-origin"] == APP
    assert "etag" in page.headers["access-control-expose-headers"].lower()
    assert "PUT" in page.headers["access-control-allow-methods"]
    other = await preflight(url, EVIL, method="PUT", headers="content-type")
    assert other.headers.get("access-control-allow-origin") != EVIL


# ------------------------------------------------------------------------- resuming from the page

MIB = 1024 * 1024


async def test_list_open_uploads_shows_the_parts_storage_holds(stack: Stack) -> None:
    """A page that lost its state finds its upload by file id, with the parts already sent."""
    base, tenant = stack.endpoints.edge_url, fresh_tenant()
    token = user_token(stack, tenant)
    created = await call_json(
        base,
        f"{UPLOAD}/CreateUpload",
        {
            "name": "video.mp4",
            "size": str(5 * MIB + 1),
            "contentType": "video/mp4",
            "kind": "UPLOAD_KIND_MULTIPART",
            "partSize": str(5 * MIB),
        },
        token=token,
    )
    assert created.status_code == 200, created.text
    upload, file_id = created.json()["upload"], created.json()["file"]["id"]
    first = next(p for p in upload["partUrls"] if p["partNumber"] == 1)
    async with httpx.AsyncClient(timeout=60) as http:
        put = await http.put(
            first["request"]["url"], content=b"\x01" * (5 * MIB), headers=first["request"].get("headers", {})
        )
    assert put.status_code == 200, put.text

    listed = await call_json(base, f"{UPLOAD}/ListOpenUploads", {"fileId": file_id}, token=token)
    assert listed.status_code == 200, listed.text
    [found] = listed.json()["uploads"]
    assert found["id"] == upload["id"]
    assert found["state"] == "UPLOAD_STATE_OPEN"
    assert [(p["partNumber"], p["size"]) for p in found["uploadedParts"]] == [(1, str(5 * MIB))]
    assert found["uploadedParts"][0]["etag"] == put.headers["etag"]  # as storage reports it
    assert found["sessionToken"]  # SignParts for the missing part without a catalogue read

    # Another user of the tenant sees none of it; the owner's other uploads are there unfiltered.
    bob = user_token(stack, tenant, subject="bob")
    assert (await call_json(base, f"{UPLOAD}/ListOpenUploads", {}, token=bob)).json().get("uploads", []) == []
    everything = await call_json(base, f"{UPLOAD}/ListOpenUploads", {}, token=token)
    assert [u["id"] for u in everything.json()["uploads"]] == [upload["id"]]


async def test_list_open_uploads_pages_and_leaves_out_ended_uploads(stack: Stack) -> None:
    base, token = stack.endpoints.edge_url, user_token(stack, fresh_tenant())
    ids = []
    for n in range(4):
        created = await call_json(
            base,
            f"{UPLOAD}/CreateUpload",
            {"name": f"n{n}.txt", "size": "1", "contentType": "text/plain"},
            token=token,
        )
        ids.append(created.json()["upload"]["id"])
    aborted = await call_json(base, f"{UPLOAD}/AbortUpload", {"uploadId": ids[0]}, token=token)
    assert aborted.status_code == 200, aborted.text

    first = (await call_json(base, f"{UPLOAD}/ListOpenUploads", {"pageSize": 2}, token=token)).json()
    assert [u["id"] for u in first["uploads"]] == [ids[3], ids[2]]  # newest first
    assert first["uploads"][0]["request"]["url"]  # a single upload's PUT, signed again
    second = (
        await call_json(
            base,
            f"{UPLOAD}/ListOpenUploads",
            {"pageSize": 2, "pageToken": first["nextPageToken"]},
            token=token,
        )
    ).json()
    assert [u["id"] for u in second["uploads"]] == [ids[1]]
    assert not second.get("nextPageToken")

    too_big = await call_json(base, f"{UPLOAD}/ListOpenUploads", {"pageSize": 26}, token=token)
    assert (too_big.json()["code"], error_info(too_big).reason) == ("invalid_argument", "INVALID_PAGE_SIZE")
    assert error_info(too_big).metadata["max_page_size"] == "25"
    # A token is bound to its caller and filter.
    other = user_token(stack, fresh_tenant())
    stolen = await call_json(
        base, f"{UPLOAD}/ListOpenUploads", {"pageSize": 2, "pageToken": first["nextPageToken"]}, token=other
    )
    assert (stolen.json()["code"], error_info(stolen).reason) == ("invalid_argument", "INVALID_PAGE_TOKEN")
