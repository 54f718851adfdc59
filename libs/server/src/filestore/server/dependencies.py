"""Channels from a service to the services it depends on (the metadata service, for the broker, the
download signer and the processor).

A dependency channel is a :func:`filestore.core.channels.service_channel` that also gives every call a
deadline (:mod:`filestore.server.deadlines`: the channel's timeout, cut to what the RPC being served
has left) and reports a call that failed in transport (the callee down, stopped, or too slow for that
deadline) as UNAVAILABLE with a reason naming the dependency, ``METADATA_UNAVAILABLE``, instead of a
bare UNAVAILABLE or DEADLINE_EXCEEDED that says nothing about who did not answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc

from filestore.core.channels import service_channel
from filestore.core.errors import STATUS_DETAILS_KEY, Unavailable, to_rpc_status
from filestore.core.reasons import Reason
from filestore.core.tls import TlsSettings
from filestore.server import deadlines
from filestore.server.settings import DEFAULT_CALL_TIMEOUT_S

__all__ = ["METADATA", "Dependency", "dependency_channel"]


@dataclass(frozen=True, slots=True)
class Dependency:
    """A service that others call: its name (in messages) and the reason of a call to it that failed
    in transport (retryable)."""

    name: str
    unavailable: Reason


#: The metadata service, as the broker, the download signer and the processor depend on it.
METADATA: Final = Dependency("metadata", Reason.METADATA_UNAVAILABLE)
#: Statuses the gRPC library itself gives a call whose callee did not answer: connection refused or
#: lost (UNAVAILABLE), or the deadline passed (DEADLINE_EXCEEDED). A callee that answers one of them
#: itself sends an ErrorInfo along; these come without.
_TRANSPORT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class _DependencyInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Every call gets a deadline; a call that fails in transport fails as the dependency being
    unavailable, with an ErrorInfo that ``translated_errors`` turns into ``Unavailable``."""

    def __init__(self, dependency: Dependency, timeout_s: float) -> None:
        self._dependency = dependency
        self._timeout_s = timeout_s

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        # A timeout given on the call itself replaces the channel's; the RPC being served cuts either.
        own = self._timeout_s if details.timeout is None else details.timeout
        call = await continuation(details._replace(timeout=deadlines.call_timeout(own)), request)
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            if error.code() not in _TRANSPORT_CODES or _has_status_details(error):
                raise
            raise self._unavailable(error) from error

    def _unavailable(self, error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        message = f"{self._dependency.name} did not answer ({error.code().name}); retry"
        # No domain: the service that answers its own caller with this error is the one to name.
        status = to_rpc_status(Unavailable(message, reason=self._dependency.unavailable), domain="")
        return grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            initial_metadata=grpc.aio.Metadata(),
            trailing_metadata=grpc.aio.Metadata((STATUS_DETAILS_KEY, status.SerializeToString())),
            details=message,
            debug_error_string=error.debug_error_string(),
        )


def _has_status_details(error: grpc.aio.AioRpcError) -> bool:
    return any(key == STATUS_DETAILS_KEY for key, _ in error.trailing_metadata() or ())


def dependency_channel(
    address: str,
    *,
    dependency: Dependency,
    token: Callable[[], str],
    tls: TlsSettings | None = None,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
) -> grpc.aio.Channel:
    """A channel to ``dependency`` at ``address``: every call has a deadline (``timeout_s`` unless the
    call gives its own, cut to what the RPC being served has left), and a call that fails in
    transport is UNAVAILABLE with the dependency's reason (``METADATA_UNAVAILABLE``)."""
    return service_channel(
        address, token=token, tls=tls, interceptors=[_DependencyInterceptor(dependency, timeout_s)]
    )
