"""boto3 clients for one store, and the bound on every blocking call made with them.

boto3 clients are thread-safe, so the blocking calls run in worker threads (``asyncio.to_thread``).
Every call to storage is bounded, because a store that is stopped (or overloaded) still accepts TCP
connections and then answers nothing. Two client profiles, from :class:`StoreConfig`:

* the control profile, for control calls (HEAD, listings, multipart bookkeeping, deletes, small
  writes): each attempt waits at most ``control_timeout_s`` (5 s) for an answer, and a call makes two
  attempts, so storage that does not answer is reported in about ten seconds, well inside a client's
  usual deadline. :func:`control_call` also cuts a call to the time the RPC being served has left, and
  reports storage's silence as ``Unavailable(reason=Reason.STORAGE_UNAVAILABLE)``.
* the streaming profile, for reading objects' bytes (the processor): the same connect timeout and
  attempts, but ``read_timeout_s`` (60 s) between two reads. No RPC waits on these reads, and a body
  may pause legitimately while storage fetches its next chunk (from another volume server, a busy
  disk, a colder tier); a timeout that fires then throws away everything read so far of what may be
  a multi-gigabyte object and costs a redelivery. A stalled read still ends, and its event is retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from filestore.server import deadlines
from filestore.server.storage.config import StoreConfig
from filestore.server.storage.errors import storage_unavailable

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["ATTEMPTS", "control_call", "control_client", "streaming_client"]

T = TypeVar("T")

#: Attempts per call, the first included: one retry rides out a dropped connection, and a store that
#: does not answer costs two timeouts, not four.
ATTEMPTS: Final = 2


def _client(config: StoreConfig, *, read_timeout_s: float) -> S3Client:
    botocore_config = Config(
        region_name=config.region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
        connect_timeout=config.control_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=32,
    )
    # A session of its own: boto3's default session is module state shared by every caller.
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint,
        aws_access_key_id=config.credentials.access_key,
        aws_secret_access_key=config.credentials.secret_key,
        config=botocore_config,
        # None keeps botocore's default: verify against the system's CAs.
        verify=config.ca_file,
    )
    return client


def control_client(config: StoreConfig) -> S3Client:
    """For the control calls a service makes to storage itself (short timeouts)."""
    return _client(config, read_timeout_s=config.control_timeout_s)


def streaming_client(config: StoreConfig) -> S3Client:
    """For reading objects' bytes as streams (a longer wait between reads)."""
    return _client(config, read_timeout_s=config.read_timeout_s)


async def control_call(call: Callable[[], T], /, *, key: str | None = None) -> T:
    """``call()``, blocking boto3 work, in a worker thread, within the time the RPC being served has
    left (:func:`filestore.server.deadlines.call_timeout`). No answer is :func:`storage_unavailable`
    (naming ``key``); storage's refusals (``ClientError``) are the caller's to read.

    A call cut short by the deadline goes on in its thread until the client's own timeouts end it;
    its answer is dropped.
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(call), deadlines.call_timeout(None))
    except BotoCoreError as error:
        raise storage_unavailable(error, key=key) from error
    except TimeoutError as error:
        raise storage_unavailable(error, key=key) from error
