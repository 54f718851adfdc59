"""Deletes objects that no file needs any more, after the transaction that orphaned them commits.

A failed delete only leaves garbage (never loses data); it is logged with the key, and the
reconciler finds such objects later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = structlog.get_logger("filestore.metadata.janitor")


class ObjectJanitor:
    def __init__(self, storage: S3Client | None, bucket: str) -> None:
        self._storage = storage
        self._bucket = bucket

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            if self._storage is None:
                log.warning("orphaned_object_kept", key=key, why="no storage configured")
                continue
            try:
                await asyncio.to_thread(self._storage.delete_object, Bucket=self._bucket, Key=key)
                log.info("orphaned_object_deleted", key=key)
            except (BotoCoreError, ClientError) as error:
                log.warning("orphaned_object_delete_failed", key=key, error=str(error))
