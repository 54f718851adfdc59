"""Channels to Filestore services: the caller's identity and trace context on every call, errors made
typed again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import structlog

from filestore.core import tracing
from filestore.core.auth import AUTHORIZATION_KEY
from filestore.core.errors import error_from_rpc
from filestore.core.settings import TlsSettings

__all__ = ["insecure_channel", "service_channel", "translated_errors"]

REQUEST_ID_KEY = "x-request-id"


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


def service_channel(
    address: str, *, token: Callable[[], str], tls: TlsSettings | None = None
) -> grpc.aio.Channel:
    """A channel to ``address`` that authenticates every call with ``token()``; over TLS when ``tls``
    names a CA (and, for mutual TLS, presents the client certificate), else plaintext."""
    interceptors = [_IdentityInterceptor(token)]
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
