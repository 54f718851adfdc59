"""Filestore's Python SDK.

::

    from filestore.client import Client, Endpoints

    with Client(Endpoints.from_stack_json()) as filestore:
        uploaded = filestore.upload("video.mp4")
        filestore.wait_until_processed(uploaded.file.id)
        filestore.download(uploaded.file.id, "copy.mp4")

:class:`AsyncClient` is the same API for asyncio. Errors are the typed exceptions of
:mod:`filestore.client.errors`, carrying the server's ``ErrorInfo`` reason (a :class:`Reason`).
"""

from __future__ import annotations

from filestore.client.client import AsyncClient, Client, DownloadResult, FileInfo, UploadResult
from filestore.client.connection import ConfigurationError, Endpoints
from filestore.client.errors import FilestoreError, IntegrityError, Reason, StorageRejected
from filestore.client.progress import Progress, ProgressCallback, TransferEvent
from filestore.client.retry import RetryPolicy
from filestore.client.transfer import TransferOptions

__all__ = [
    "AsyncClient",
    "Client",
    "ConfigurationError",
    "DownloadResult",
    "Endpoints",
    "FileInfo",
    "FilestoreError",
    "IntegrityError",
    "Progress",
    "ProgressCallback",
    "Reason",
    "RetryPolicy",
    "StorageRejected",
    "TransferEvent",
    "TransferOptions",
    "UploadResult",
]
