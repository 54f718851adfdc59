"""Client-side steps of an upload, shared by the integration tests."""

from __future__ import annotations

import hashlib
import socket

import httpx

from filestore.v1 import metadata_service_pb2, resources_pb2, upload_service_pb2
from tests.conftest import Client, StatusEvents


async def put_presigned(
    request: resources_pb2.PresignedRequest, body: bytes, **header_overrides: str
) -> httpx.Response:
    """The client side of an upload: plain HTTP, no credentials, only what the broker handed out."""
    headers = {**request.headers, **header_overrides}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.put(request.url, content=body, headers=headers)


async def create_upload(
    client: Client,
    body: bytes,
    *,
    name: str = "report.pdf",
    content_type: str = "application/pdf",
    declare_sha256: bool = True,
) -> upload_service_pb2.CreateUploadResponse:
    response: upload_service_pb2.CreateUploadResponse = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name=name,
            size=len(body),
            content_type=content_type,
            sha256=hashlib.sha256(body).hexdigest() if declare_sha256 else "",
        )
    )
    return response


async def complete_upload(client: Client, upload_id: str) -> upload_service_pb2.CompleteUploadResponse:
    response: upload_service_pb2.CompleteUploadResponse = await client.upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=upload_id)
    )
    return response


async def get_file(client: Client, file_id: str) -> resources_pb2.File:
    file: resources_pb2.File = await client.metadata.GetFile(
        metadata_service_pb2.GetFileRequest(file_id=file_id)
    )
    return file


async def upload_until_processed(
    client: Client,
    status_events: StatusEvents,
    body: bytes,
    *,
    name: str = "report.pdf",
    content_type: str = "application/pdf",
) -> resources_pb2.File:
    """Create, PUT, complete, and wait for the processor's verdict; answers the file as it ended."""
    created = await create_upload(client, body, name=name, content_type=content_type)
    response = await put_presigned(created.upload.request, body)
    assert response.status_code == 200, response.text
    await complete_upload(client, created.upload.id)
    await status_events.wait_for(created.file.id)
    return await get_file(client, created.file.id)


def free_port() -> int:
    """A loopback port free right now, for a process a test starts beside the stack."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
