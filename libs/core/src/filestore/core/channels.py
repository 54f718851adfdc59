"""Channels to Filestore services: the caller's identity on every call, errors made typed again.

Every call carries the bearer token. A process may add more to every call it makes with
:func:`add_metadata_source`: the SDK adds nothing, while a Filestore service (the server package,
:mod:`filestore.server`, installs its sources when it is imported) passes on the request id of the RPC
it is serving, so that one request can be followed across services in the logs, and the current trace
context, so that the callee's span joins the caller's trace. Services add their own interceptors
(deadlines, naming a dependency that did not answer: :mod:`filestore.server.dependencies`) through
``interceptors``; there is one channel, whoever opens it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import grpc

from filestore.core.auth import AUTHORIZATION_KEY
from filestore.core.errors import error_from_rpc
from filestore.core.tls import TlsSettings

__all__ = [
    "CHANNEL_OPTIONS",
    "REQUEST_ID_KEY",
    "MetadataSource",
    "add_metadata_source",
    "insecure_channel",
    "plain_channel",
    "service_channel",
    "translated_errors",
]

#: The metadata key of the request id, in and out of every Filestore service.
REQUEST_ID_KEY = "x-request-id"

#: Every channel spreads its calls over all the addresses its target resolves to (``round_robin``)
#: instead of gRPC's default of one connection to the first (``pick_first``). A channel keeps its
#: connections, so a balancer in front of replicas sees one long connection per client and balances
#: nothing: with a name that resolves to every replica (``dns:///metadata-headless:50051``, a
#: Kubernetes headless Service) the client balances itself, and re-resolves when replicas come and go.
#: A name that resolves to one address behaves as before.
CHANNEL_OPTIONS: Final = (
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
)

#: Given the metadata keys an outgoing call already carries, the (key, value) pairs to add to it.
#: A source leaves alone what the caller set on the call itself.
MetadataSource = Callable[[Collection[str]], Iterable[tuple[str, str]]]

_metadata_sources: list[MetadataSource] = []


def add_metadata_source(source: MetadataSource) -> None:
    """Have every call made on a channel of this process, from now on, carry what ``source`` adds
    (once, however often it is added)."""
    if source not in _metadata_sources:
        _metadata_sources.append(source)


class _IdentityInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the bearer token, then what the process's metadata sources add."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != AUTHORIZATION_KEY]
        metadata.append((AUTHORIZATION_KEY, f"Bearer {self._token()}"))
        present = frozenset(key for key, _ in metadata)
        for source in _metadata_sources:
            metadata.extend(source(present))
        return await continuation(details._replace(metadata=metadata), request)


def service_channel(
    address: str,
    *,
    token: Callable[[], str],
    tls: TlsSettings | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A channel to ``address`` that authenticates every call with ``token()``; over TLS when ``tls``
    names a CA (and, for mutual TLS, presents the client certificate), else plaintext.

    ``interceptors`` run after the one that adds the token, in the order given. Calls keep whatever
    deadline the caller gives them.
    """
    chain: list[grpc.aio.ClientInterceptor] = [_IdentityInterceptor(token), *interceptors]
    return plain_channel(address, tls=tls, interceptors=chain)


def plain_channel(
    address: str,
    *,
    tls: TlsSettings | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A channel to ``address`` that adds no identity of its own: over TLS when ``tls`` names a CA
    (and, for mutual TLS, presents the client certificate), else plaintext. For a process that
    passes on its callers' own tokens (the browser face, filestore-edge)."""
    if tls is None or (tls.ca_file is None and tls.client_cert_file is None):
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.client_key_file),
        certificate_chain=_read(tls.client_cert_file),
    )
    return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors)


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
