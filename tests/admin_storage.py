"""Storage as the stack's operator reaches it, behind the services' backs: the tests make with it the
situations the services must handle (objects put, deleted or rewritten, multipart uploads left open,
parts of the wrong size) and check what storage holds afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from filestore.server.storage import ObjectStore, StoreConfig
from filestore.stack import Stack

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["admin_client", "admin_store"]


def admin_store(stack: Stack) -> ObjectStore:
    """The stack's bucket through the one object store, with the administrator's keys (every action)."""
    return ObjectStore(StoreConfig.from_settings(stack.endpoints.admin_s3_settings(), name="admin"))


def admin_client(stack: Stack) -> S3Client:
    """A bare boto3 client with the administrator's keys, for what no service does (sending a part
    with storage credentials, reading storage's own error codes); as bounded as the services' calls."""
    settings = stack.endpoints.admin_s3_settings()
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=Config(
            region_name=settings.region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 2},
            connect_timeout=settings.control_timeout_s,
            read_timeout=settings.control_timeout_s,
        ),
    )
    return client
