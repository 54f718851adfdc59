"""Multipart uploads as a client drives them, for the tests: create one, PUT a part with only what
the broker handed out, cut the body into the plan's parts, complete."""

from __future__ import annotations

import hashlib

import httpx

from filestore.v1 import resources_pb2, upload_service_pb2
from tests.support import Client

MIB = 1024**2
#: The smallest part storage and the broker allow.
PART = 5 * MIB
Algorithm = resources_pb2.ChecksumAlgorithm


async def create_multipart(
    client: Client,
    body: bytes,
    *,
    part_size: int = PART,
    request_id: str = "",
    algorithm: resources_pb2.ChecksumAlgorithm.ValueType = Algorithm.CHECKSUM_ALGORITHM_UNSPECIFIED,
) -> upload_service_pb2.CreateUploadResponse:
    response: upload_service_pb2.CreateUploadResponse = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name="video.mp4",
            size=len(body),
            content_type="video/mp4",
            sha256=hashlib.sha256(body).hexdigest(),
            kind=resources_pb2.UPLOAD_KIND_MULTIPART,
            part_size=part_size,
            request_id=request_id,
            part_checksum_algorithm=algorithm,
        )
    )
    return response


async def put_part(part: resources_pb2.PartUrl, data: bytes) -> httpx.Response:
    """What a browser or device does: plain HTTP with only what the broker handed out."""
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.put(part.request.url, content=data, headers=dict(part.request.headers))


def chunk(body: bytes, upload: resources_pb2.Upload, number: int) -> bytes:
    start = (number - 1) * upload.part_size
    return body[start : start + upload.part_size]


async def complete(
    client: Client, upload_id: str, part_checksums: dict[int, str] | None = None
) -> upload_service_pb2.CompleteUploadResponse:
    response: upload_service_pb2.CompleteUploadResponse = await client.upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=upload_id, part_checksums=part_checksums or {})
    )
    return response
