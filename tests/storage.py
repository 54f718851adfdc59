"""The bucket as the stack's administrator sees it, through boto3 and not through the services'
own storage code, so a test does not take the code under test's word for what storage holds."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from filestore.stack import Stack

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client


def admin_storage(stack: Stack) -> S3Client:
    """Every action on the stack's bucket."""
    endpoints = stack.endpoints
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=endpoints.s3_endpoint,
        aws_access_key_id=endpoints.s3_access_key,
        aws_secret_access_key=endpoints.s3_secret_key,
        config=Config(
            region_name=endpoints.s3_region, signature_version="s3v4", s3={"addressing_style": "path"}
        ),
    )
    return client


async def object_exists(stack: Stack, key: str) -> bool:
    try:
        await asyncio.to_thread(admin_storage(stack).head_object, Bucket=stack.endpoints.bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True
