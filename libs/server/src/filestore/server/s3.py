"""The one place that builds S3 clients and URL signers: built once per process, shared, never per
request.

boto3 clients are thread-safe, so the blocking control calls (HEAD, multipart bookkeeping) run in
worker threads through ``asyncio.to_thread``. URLs for clients are signed by
:class:`filestore.server.sigv4.SigV4Presigner` (pure computation, inline), not by botocore.

Every call to storage is bounded, because a store that is stopped (or overloaded) still accepts TCP
connections and then answers nothing. Two client profiles, from :class:`S3Settings`:

* :func:`storage_client`, for control calls: each attempt waits at most ``control_timeout_s`` (5 s)
  for an answer, and a call makes two attempts, so storage that does not answer is reported in
  about ten seconds, well inside a client's usual deadline. :func:`control_call` also cuts a call to
  the time the RPC being served has left, and reports storage's silence as
  ``Unavailable(reason=Reason.STORAGE_UNAVAILABLE)``.
* :func:`streaming_client`, for reading objects' bytes (the processor): the same connect timeout and
  attempts, but ``read_timeout_s`` (60 s) between two reads. No RPC waits on these reads, and a body
  may pause legitimately while storage fetches its next chunk (from another volume server, a busy
  disk, a colder tier); a timeout that fires then throws away everything read so far of what may be
  a multi-gigabyte object and costs a redelivery. A stalled read still ends, and its event is retried.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ConnectTimeoutError, EndpointConnectionError, HTTPClientError

from filestore.core.errors import Unavailable
from filestore.core.reasons import Reason
from filestore.server import deadlines
from filestore.server.settings import S3Settings
from filestore.server.sigv4 import SigV4Presigner

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = [
    "TRANSPORT_ERRORS",
    "control_call",
    "presigner",
    "storage_client",
    "storage_unavailable",
    "streaming_client",
]

T = TypeVar("T")

#: What botocore raises when storage could not be reached or stopped answering (a connect refused or
#: timed out, a read timed out, a connection dropped mid-answer), as opposed to storage refusing, or
#: a configuration storage can never be reached with (TLS, proxy).
TRANSPORT_ERRORS: Final = (EndpointConnectionError, ConnectTimeoutError, HTTPClientError)
#: Attempts per call, the first included: one retry rides out a dropped connection, and a store that
#: does not answer costs two timeouts, not four.
ATTEMPTS: Final = 2


def _client(settings: S3Settings, *, read_timeout_s: float) -> S3Client:
    config = Config(
        region_name=settings.region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
        connect_timeout=settings.control_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=32,
    )
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=config,
    )
    return client


@functools.cache
def storage_client(settings: S3Settings) -> S3Client:
    """For the control calls the service makes to storage itself (short timeouts)."""
    return _client(settings, read_timeout_s=settings.control_timeout_s)


@functools.cache
def streaming_client(settings: S3Settings) -> S3Client:
    """For reading objects' bytes as streams (a longer wait between reads)."""
    return _client(settings, read_timeout_s=settings.read_timeout_s)


def storage_unavailable(error: BaseException, *, key: str | None = None) -> Unavailable:
    """The error for a storage call that got no answer: botocore's connection and timeout errors (and
    its others: none of them is the caller's fault), or the RPC's own deadline coming first."""
    about = f" about {key}" if key else ""
    detail = str(error) or "the caller's deadline came first"
    return Unavailable(f"storage did not answer{about}: {detail}", reason=Reason.STORAGE_UNAVAILABLE)


async def control_call(method: Callable[..., T], /, **kwargs: Any) -> T:
    """``method(**kwargs)``, a blocking boto3 call, in a worker thread, within the time the RPC being
    served has left (:func:`filestore.server.deadlines.call_timeout`). No answer is
    :func:`storage_unavailable`; storage's refusals (``ClientError``) are the caller's to read.

    A call cut short by the deadline goes on in its thread until the client's own timeouts end it;
    its answer is dropped.
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(method, **kwargs), deadlines.call_timeout(None))
    except BotoCoreError as error:
        raise storage_unavailable(error, key=kwargs.get("Key")) from error
    except TimeoutError as error:
        raise storage_unavailable(error, key=kwargs.get("Key")) from error


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
