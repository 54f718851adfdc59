"""Channels to Filestore services: the caller's identity and trace context on every call, errors made
typed again.

A channel a service opens to another (its *dependency*, for example the metadata service) also gives
every call a deadline (:mod:`filestore.core.deadlines`: the channel's timeout, cut to what the RPC being
served has left) and reports a call that failed in transport (the callee down, stopped, or too slow for
that deadline) as UNAVAILABLE with a reason naming the dependency, ``METADATA_UNAVAILABLE``, instead of
a bare UNAVAILABLE or DEADLINE_EXCEEDED that says nothing about who did not answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import grpc
import structlog

from filestore.core import deadlines, tracing
from filestore.core.auth import AUTHORIZATION_KEY
from filestore.core.errors import STATUS_DETAILS_KEY, Unavailable, error_from_rpc, to_rpc_status
from filestore.core.settings import DEFAULT_CALL_TIMEOUT_S, TlsSettings

__all__ = [
    "DEFAULT_CALL_TIMEOUT_S",
    "METADATA",
    "insecure_channel",
    "service_channel",
    "translated_errors",
    "unavailable_reason",
]

REQUEST_ID_KEY = "x-request-id"
#: The metadata service, as the broker, the download signer and the processor depend on it.
METADATA: Final = "metadata"
#: Statuses the gRPC library itself gives a call whose callee did not answer: connection refused or
#: lost (UNAVAILABLE), or the deadline passed (DEADLINE_EXCEEDED). A callee that answers one of them
#: itself sends an ErrorInfo along; these come without.
_TRANSPORT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def unavailable_reason(dependency: str) -> str:
    """The ErrorInfo reason of a call to ``dependency`` that failed in transport (retryable)."""
    return f"{dependency.upper()}_UNAVAILABLE"


class _IdentityInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the bearer token, the request id of the RPC being served (so one request can be
    followed across services in the logs) and the current trace context (so the callee's span joins
    the caller's trace). A ``traceparent`` the caller set on the call itself is kept."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != AUTHORIZATION_KEY]
        metadata.append((AUTHORIZATION_KEY, f"Bearer {self._token()}"))
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if isinstance(request_id, str) and not any(k == REQUEST_ID_KEY for k, _ in metadata):
            metadata.append((REQUEST_ID_KEY, request_id))
        if not any(k == tracing.TRACEPARENT for k, _ in metadata):
            carrier: dict[str, str] = {}
            tracing.inject(carrier)
            metadata.extend(carrier.items())
        return await continuation(details._replace(metadata=metadata), request)


class _DependencyInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Every call gets a deadline; a call that fails in transport fails as the dependency being
    unavailable, with an ErrorInfo that :func:`translated_errors` turns into ``Unavailable``."""

    def __init__(self, dependency: str, timeout_s: float) -> None:
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
        message = f"{self._dependency} did not answer ({error.code().name}); retry"
        # No domain: the service that answers its own caller with this error is the one to name.
        status = to_rpc_status(Unavailable(message, reason=unavailable_reason(self._dependency)), domain="")
        return grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            initial_metadata=grpc.aio.Metadata(),
            trailing_metadata=grpc.aio.Metadata((STATUS_DETAILS_KEY, status.SerializeToString())),
            details=message,
            debug_error_string=error.debug_error_string(),
        )


def _has_status_details(error: grpc.aio.AioRpcError) -> bool:
    return any(key == STATUS_DETAILS_KEY for key, _ in error.trailing_metadata() or ())


def service_channel(
    address: str,
    *,
    token: Callable[[], str],
    tls: TlsSettings | None = None,
    dependency: str | None = None,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
) -> grpc.aio.Channel:
    """A channel to ``address`` that authenticates every call with ``token()``; over TLS when ``tls``
    names a CA (and, for mutual TLS, presents the client certificate), else plaintext.

    A service opening a channel to another names it as its ``dependency``: every call then has a
    deadline (``timeout_s`` unless the call gives its own, cut to what the RPC being served has left),
    and a call that fails in transport is UNAVAILABLE with reason :func:`unavailable_reason` of it.
    Without a dependency (the SDK, tests) calls keep whatever deadline the caller gives them.
    """
    interceptors: list[grpc.aio.ClientInterceptor] = [_IdentityInterceptor(token)]
    if dependency is not None:
        interceptors.append(_DependencyInterceptor(dependency, timeout_s))
    if tls is None or (tls.ca_file is None and tls.client_cert_file is None):
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.client_key_file),
        certificate_chain=_read(tls.client_cert_file),
    )
    return grpc.aio.secure_channel(address, credentials, interceptors=interceptors)


def insecure_channel(address: str, *, token: Callable[[], str]) -> grpc.aio.Channel:
    """A plaintext channel: for loopback and the private network of the embedded stack."""
    return service_channel(address, token=token)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as handle:
        return handle.read()


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise a failed call as the typed error it carried, reason and domain intact."""
    try:
        yield
    except grpc.RpcError as error:
        raise error_from_rpc(error) from None
