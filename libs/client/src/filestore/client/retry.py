"""When and how long to wait before trying again: exponential backoff with full jitter.

Full jitter (a delay drawn uniformly between 0 and the exponential cap) spreads the retries of many
clients that failed together, so they do not come back in lockstep and fail together again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from filestore.core.errors import FilestoreError, ResourceExhausted, error_from_rpc
from filestore.core.reasons import Reason

__all__ = [
    "RetryPolicy",
    "RpcRetryCallback",
    "call_with_retries",
    "is_retryable_error",
    "is_transient_status",
]

T = TypeVar("T")

#: Told of every RPC the SDK retries: the method (``"CreateUpload"``), the error of the failed attempt,
#: the attempt's number (1-based) and the delay before the next one. Storage retries are not RPCs:
#: an upload's or download's progress callback hears them as ``TransferEvent.RETRYING``.
RpcRetryCallback = Callable[[str, FilestoreError, int, float], None]

# 408/429 and the gateway family say "not now"; 501 and 505 say "never", so they are not here.
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """``max_attempts`` tries in all (the first included), the n-th retry waiting a uniform random
    time in ``[0, min(max_delay_s, base_delay_s * 2**(n-1))]``."""

    max_attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 10.0
    #: Source of uniform [0, 1) numbers; tests pass a fixed one to make delays predictable.
    uniform: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays must not be negative")

    def cap_s(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1-based)."""
        # The exponent is bounded so that a long-running resume cannot overflow the float.
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(retry - 1, 60))

    def delay_s(self, retry: int) -> float:
        return self.uniform() * self.cap_s(retry)


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status from storage is worth retrying unchanged."""
    return status in _TRANSIENT_STATUSES


def is_retryable_error(error: FilestoreError) -> bool:
    """The retry rule of the API (resources.proto): UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, and
    RESOURCE_EXHAUSTED only when the reason is ``RATE_LIMITED`` (a quota will not free itself)."""
    return error.retryable or (isinstance(error, ResourceExhausted) and error.reason == Reason.RATE_LIMITED)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, FilestoreError, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await call()``, turning a failed RPC into its typed error and retrying the retryable ones.

    Only calls that are safe to repeat belong here: reads, and writes that carry a ``request_id``.
    """
    attempt = 1
    while True:
        try:
            return await call()
        except grpc.RpcError as rpc_error:
            error = error_from_rpc(rpc_error)
        if not is_retryable_error(error) or attempt >= policy.max_attempts:
            raise error
        delay = policy.delay_s(attempt)
        if on_retry is not None:
            on_retry(attempt, error, delay)
        await sleep(delay)
        attempt += 1
