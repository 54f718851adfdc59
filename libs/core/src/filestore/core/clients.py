"""Channels to Filestore services: the caller's identity on every call, errors made typed again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import structlog

from filestore.core.auth import AUTHORIZATION_KEY
from filestore.core.errors import error_from_rpc

__all__ = ["insecure_channel", "translated_errors"]

REQUEST_ID_KEY = "x-request-id"


class _IdentityInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the bearer token, and the request id of the RPC being served (so one request can be
    followed across services in the logs)."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != AUTHORIZATION_KEY]
        metadata.append((AUTHORIZATION_KEY, f"Bearer {self._token()}"))
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if isinstance(request_id, str) and not any(k == REQUEST_ID_KEY for k, _ in metadata):
            metadata.append((REQUEST_ID_KEY, request_id))
        return await continuation(details._replace(metadata=metadata), request)


def insecure_channel(address: str, *, token: Callable[[], str]) -> grpc.aio.Channel:
    """A channel to ``address`` that authenticates every call with ``token()``.

    Plaintext: for loopback and private networks of the embedded stack.
    """
    return grpc.aio.insecure_channel(address, interceptors=[_IdentityInterceptor(token)])


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise a failed call as the typed error it carried, reason and domain intact."""
    try:
        yield
    except grpc.RpcError as error:
        raise error_from_rpc(error) from None
