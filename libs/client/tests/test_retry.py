"""Backoff with full jitter, and which failures are retried."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from filestore.client.errors import InvalidArgument, ResourceExhausted, Unavailable
from filestore.client.retry import RetryPolicy, call_with_retries, is_retryable_error, is_transient_status
from filestore.core.errors import to_rpc_status


class FailedCall(grpc.RpcError):
    """A failed call as grpc.aio raises it: code, details and the status trailer."""

    def __init__(self, error: Exception, code: grpc.StatusCode) -> None:
        status = to_rpc_status(error, domain="upload.filestore.v1")  # type: ignore[arg-type]
        self._code = code
        self._trailer = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "failed"

    def trailing_metadata(self) -> Sequence[tuple[str, bytes]]:
        return self._trailer


def test_full_jitter_stays_under_an_exponential_cap() -> None:
    top = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0, uniform=lambda: 0.999)
    assert [round(top.delay_s(n), 2) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    bottom = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0, uniform=lambda: 0.0)
    assert bottom.delay_s(3) == 0.0
    assert RetryPolicy().cap_s(10_000) == RetryPolicy().max_delay_s  # no overflow on long resumes


def test_a_policy_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (500, True),
        (503, True),
        (429, True),
        (408, True),
        (501, False),
        (400, False),
        (403, False),
        (404, False),
    ],
)
def test_transient_http_statuses(status: int, transient: bool) -> None:
    assert is_transient_status(status) is transient


def test_only_rate_limits_of_resource_exhausted_are_retryable() -> None:
    assert is_retryable_error(ResourceExhausted("slow down", reason="RATE_LIMITED"))
    assert not is_retryable_error(ResourceExhausted("full", reason="QUOTA_EXCEEDED"))
    assert is_retryable_error(Unavailable("down"))
    assert not is_retryable_error(InvalidArgument("bad", reason="INVALID_SIZE"))


async def test_retryable_failures_are_retried_then_succeed() -> None:
    waits: list[float] = []
    outcomes: list[Exception | str] = [
        FailedCall(Unavailable("down"), grpc.StatusCode.UNAVAILABLE),
        FailedCall(ResourceExhausted("slow", reason="RATE_LIMITED"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        "answer",
    ]

    async def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def sleep(delay: float) -> None:
        waits.append(delay)

    policy = RetryPolicy(base_delay_s=1.0, uniform=lambda: 0.5)
    assert await call_with_retries(call, policy, sleep=sleep) == "answer"
    assert waits == [0.5, 1.0]


async def test_final_errors_are_raised_typed_at_once_and_retries_end() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise FailedCall(InvalidArgument("bad", reason="INVALID_SIZE"), grpc.StatusCode.INVALID_ARGUMENT)

    async def no_sleep(delay: float) -> None:
        return None

    with pytest.raises(InvalidArgument) as final:
        await call_with_retries(refused, RetryPolicy(), sleep=no_sleep)
    assert (calls, final.value.reason, final.value.domain) == (1, "INVALID_SIZE", "upload.filestore.v1")

    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise FailedCall(Unavailable("down"), grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(Unavailable):
        await call_with_retries(down, RetryPolicy(max_attempts=3), sleep=no_sleep)
    assert calls == 3
