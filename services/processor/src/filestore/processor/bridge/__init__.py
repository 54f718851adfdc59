"""Storage-event bridges: storage notifications → canonical ``ObjectCreated`` (and, from SeaweedFS,
``ObjectDeleted``) events on JetStream.

* :class:`SeaweedBridge` follows SeaweedFS's filer metadata subscription with a durable cursor.
* :class:`NotificationBridge` takes MinIO's and AWS S3's own JSON notifications from NATS or SQS;
  :func:`from_minio`, :func:`from_aws` (S3 events, EventBridge events, either in an SNS envelope) and
  :func:`from_aws_s3` normalize them.
* :func:`~filestore.processor.bridge.modes.storage_bridge` builds the one a processor's settings ask for.
"""

from __future__ import annotations

from filestore.processor.bridge.filer import (
    FilerLayout,
    entry_etag,
    object_created_from_filer,
    object_deleted_from_filer,
)
from filestore.processor.bridge.normalize import from_aws, from_aws_eventbridge, from_aws_s3, from_minio
from filestore.processor.bridge.notifications import NotificationBridge
from filestore.processor.bridge.seaweedfs import SeaweedBridge

__all__ = [
    "FilerLayout",
    "NotificationBridge",
    "SeaweedBridge",
    "entry_etag",
    "from_aws",
    "from_aws_eventbridge",
    "from_aws_s3",
    "from_minio",
    "object_created_from_filer",
    "object_deleted_from_filer",
]
