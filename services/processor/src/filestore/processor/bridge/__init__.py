"""Storage-event bridges: storage notifications → canonical ``ObjectCreated`` (and, from SeaweedFS,
``ObjectDeleted``) events on JetStream.

* :class:`SeaweedBridge` follows SeaweedFS's filer metadata subscription with a durable cursor.
* :func:`from_aws_s3` and :func:`from_minio` normalize AWS S3 and MinIO notification JSON.
"""

from __future__ import annotations

from filestore.processor.bridge.filer import (
    FilerLayout,
    entry_etag,
    object_created_from_filer,
    object_deleted_from_filer,
)
from filestore.processor.bridge.normalize import from_aws_s3, from_minio
from filestore.processor.bridge.seaweedfs import SeaweedBridge

__all__ = [
    "FilerLayout",
    "SeaweedBridge",
    "entry_etag",
    "from_aws_s3",
    "from_minio",
    "object_created_from_filer",
    "object_deleted_from_filer",
]
