"""Channels to Filestore services: the caller's identity on every call, errors made typed again.

Every call carries the bearer token. A process may add more to every call it makes with
:func:`add_metadata_source`: the SDK adds nothing, while a Filestore service (the server package,
:mod:`filestore.server`, installs its sources when it is imported) passes on the request id of the RPC
it is serving, so that one request can be followed across services in the logs, and the current trace
context, so that the callee's span joins the caller's trace. Services add their own interceptors
(deadlines, naming a dependency that did not answer: :mod:`filestore.server.dependencies`) through
``interceptors``; there is one channel, whoever opens it.

An address may name several replicas of a service, comma separated (``10.0.0.5:50051,10.0.0.6:50051``):
the channel then keeps a connection to each and spreads calls over the ready ones with gRPC's own
``round_robin`` balancing, so a replica that goes away costs the callers nothing but its in-flight calls.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc

from filestore.core.auth import AUTHORIZATION_KEY
from filestore.core.errors import error_from_rpc
from filestore.core.tls import TlsSettings

__all__ = [
    "REQUEST_ID_KEY",
    "MetadataSource",
    "add_metadata_source",
    "channel_target",
    "insecure_channel",
    "plain_channel",
    "service_channel",
    "translated_errors",
]

#: The metadata key of the request id, in and out of every Filestore service.
REQUEST_ID_KEY = "x-request-id"

#: Given the metadata keys an outgoing call already carries, the (key, value) pairs to add to it.
#: A source leaves alone what the caller set on the call itself.
MetadataSource = Callable[[Collection[str]], Iterable[tuple[str, str]]]

_metadata_sources: list[MetadataSource] = []

#: gRPC's client-side balancing over every address a target resolves to (the default, pick_first,
#: would send every call to the first replica until it fails).
_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


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
    passes on its callers' own tokens (the browser face, filestore-edge).

    ``address`` may list several replicas, comma separated: see :func:`channel_target`."""
    target, options = channel_target(address)
    if tls is None or (tls.ca_file is None and tls.client_cert_file is None):
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.client_key_file),
        certificate_chain=_read(tls.client_cert_file),
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def channel_target(address: str) -> tuple[str, list[tuple[str, str]]]:
    """The gRPC target and channel options for ``address``: one ``host:port`` (or any gRPC target,
    such as ``dns:///filestore-metadata:50051``) as it is; several, comma separated, as one
    ``ipv4:``/``ipv6:`` target balanced ``round_robin`` over all of them.

    The listed form takes IP addresses only, because a gRPC target names one resolver: replicas
    behind a DNS name are ``dns:///name:port``, which is balanced the same way. The authority (what
    a TLS server certificate is checked against) is the first replica's: give every replica a
    certificate that names all their addresses, or one name they share.
    """
    addresses = [part.strip() for part in address.split(",") if part.strip()]
    if len(addresses) <= 1:
        single = addresses[0] if addresses else address
        if single.startswith("dns:"):
            return single, [("grpc.service_config", _ROUND_ROBIN)]
        return single, []
    families = {_ip_family(replica, whole=address) for replica in addresses}
    if len(families) != 1:
        raise ValueError(f"{address!r} mixes IPv4 and IPv6 replicas; gRPC balances over one family")
    (family,) = families
    # Else the authority would be the whole list, which no certificate names.
    options = [("grpc.service_config", _ROUND_ROBIN), ("grpc.default_authority", addresses[0])]
    return f"{family}:{','.join(addresses)}", options


def _ip_family(replica: str, *, whole: str) -> str:
    host, sep, port = replica.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"replica {replica!r} of {whole!r} is not ip:port")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"replica {replica!r} of {whole!r} is not an IP address; list IP addresses, or give one "
            "dns:///name:port target whose name resolves to every replica"
        ) from None
    return "ipv4" if ip.version == 4 else "ipv6"


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
