from __future__ import annotations

import grpc

from filestore.core.errors import (
    STATUS_DETAILS_KEY,
    FailedPrecondition,
    NotFound,
    error_from_rpc,
    to_rpc_status,
)
from filestore.v1 import resources_pb2  # noqa: F401  (the generated package imports cleanly)


class _FakeCall(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, bytes], ...]) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailing


def test_status_carries_exactly_one_error_info() -> None:
    status = to_rpc_status(NotFound("no such file", reason="FILE_NOT_FOUND"), domain="metadata.filestore.v1")
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert len(status.details) == 1


def test_reason_and_domain_survive_a_round_trip() -> None:
    original = FailedPrecondition("illegal", reason="ILLEGAL_TRANSITION", metadata={"from": "READY"})
    status = to_rpc_status(original, domain="metadata.filestore.v1")
    call = _FakeCall(
        grpc.StatusCode.FAILED_PRECONDITION, "illegal", ((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )
    rebuilt = error_from_rpc(call)
    assert isinstance(rebuilt, FailedPrecondition)
    assert (rebuilt.reason, rebuilt.domain, rebuilt.metadata) == (
        "ILLEGAL_TRANSITION",
        "metadata.filestore.v1",
        {"from": "READY"},
    )


def test_transport_failure_without_details_keeps_the_code() -> None:
    rebuilt = error_from_rpc(_FakeCall(grpc.StatusCode.UNAVAILABLE, "connection refused", ()))
    assert rebuilt.code is grpc.StatusCode.UNAVAILABLE
    assert rebuilt.reason == "UNAVAILABLE"
    assert rebuilt.retryable
