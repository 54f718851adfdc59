"""The one place that builds S3 clients and URL signers: built once per process, shared, never per
request.

boto3 clients are thread-safe, so the blocking control calls (HEAD, multipart bookkeeping) run in
worker threads through ``asyncio.to_thread``. URLs for clients are signed by
:class:`filestore.core.sigv4.SigV4Presigner` (pure computation, inline), not by botocore.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from filestore.core.settings import S3Settings
from filestore.core.sigv4 import SigV4Presigner

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["presigner", "storage_client"]


def _client(settings: S3Settings, endpoint: str) -> S3Client:
    config = Config(
        region_name=settings.region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=config,
    )
    return client


@functools.cache
def storage_client(settings: S3Settings) -> S3Client:
    """For calls the service makes to storage itself."""
    return _client(settings, settings.endpoint)


@functools.cache
def presigner(settings: S3Settings) -> SigV4Presigner:
    """For URLs clients will use: signed for the public endpoint, which may differ from ours."""
    return SigV4Presigner(
        endpoint=settings.public_endpoint,
        region=settings.region,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        bucket=settings.bucket,
    )
