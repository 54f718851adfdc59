"""The bucket as the stack's administrator sees it, behind the services' backs: the tests make with it
the situations the services must handle (objects put, deleted or rewritten, multipart uploads left open,
parts of the wrong size) and check what storage holds afterwards. ``admin_storage`` is a bare boto3
client, so a test that checks what storage holds does not take the code under test's word for it;
``admin_store`` is the one object store with the administrator's keys, for the tests of that store and
for setting up situations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from filestore.server.storage import ObjectStore, StoreConfig
from filestore.stack import Stack

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["admin_storage", "admin_store", "bucket_cors_kept", "object_exists"]


def admin_storage(stack: Stack) -> S3Client:
    """A boto3 client with the administrator's keys (every action on the bucket), as bounded as the
    services' own calls."""
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
        verify=settings.ca_file,
    )
    return client


def admin_store(stack: Stack) -> ObjectStore:
    """The stack's bucket through the one object store, with the administrator's keys."""
    return ObjectStore(StoreConfig.from_settings(stack.endpoints.admin_s3_settings(), name="admin"))


async def object_exists(stack: Stack, key: str) -> bool:
    """Whether storage holds ``key``, as boto3 hears it from storage."""
    try:
        await asyncio.to_thread(admin_storage(stack).head_object, Bucket=stack.endpoints.bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


@asynccontextmanager
async def bucket_cors_kept(stack: Stack) -> AsyncIterator[None]:
    """The bucket's CORS rules as they are now, put back afterwards. The stack's broker applied them at
    start (the browser tests' page origin and the demo page's among them), so a test that changes them
    must leave them so: one that reset them to none instead would fail every browser test after it."""
    operator = admin_storage(stack)
    bucket = stack.endpoints.bucket
    saved = (await asyncio.to_thread(operator.get_bucket_cors, Bucket=bucket))["CORSRules"]
    try:
        yield
    finally:
        await asyncio.to_thread(
            operator.put_bucket_cors, Bucket=bucket, CORSConfiguration={"CORSRules": saved}
        )
