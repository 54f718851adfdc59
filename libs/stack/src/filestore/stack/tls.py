"""TLS for a stack of local processes: which certificates it issues, and what each component is given.

With TLS on (``FILESTORE_STACK_TLS=1``, ``StackConfig(tls=True)``), the stack's CA
(:mod:`filestore.stack.certificates`, in ``$FILESTORE_HOME/tls/``) issues:

* a server certificate per component that listens (each service, the browser face, NATS, the S3
  gateway), for the stack's host, ``127.0.0.1``, ``localhost`` and any extra names asked for;
* a client certificate per caller: each service and the browser face (their calls to other services
  and to NATS), and ``user``, the one ``stack.json`` names for the SDK, the CLI and the Node client.

Every gRPC service then serves TLS and demands a client certificate signed by the CA (mutual TLS), so
only holders of the stack's certificates reach it; NATS does the same (``verify: true``). The browser
face serves HTTPS without asking browsers for certificates, and the S3 gateway serves HTTPS without
them too (presigned URLs are bearer instruments for browsers). What stays plaintext, on the loopback
interface only: SeaweedFS's internal master/volume/filer ports and its gRPC (the event bridge's filer
subscription), clamd, and the Prometheus ``/metrics`` ports.

:func:`tls_env_for` is the one place that says which ``FILESTORE_*`` variables a component gets; any
runner of these processes (this stack, a cluster profile of it) uses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from filestore.core.tls import TlsSettings
from filestore.stack.certificates import CertificateAuthority, IssuedCertificate
from filestore.stack.config import SERVICES
from filestore.stack.errors import StackConfigError

__all__ = [
    "NATS_CONFIG_FILE",
    "TLS_CLIENTS",
    "TLS_SERVERS",
    "USER_CLIENT",
    "StackTls",
    "ensure_stack_tls",
    "nats_route_tls_config",
    "nats_tls_config",
    "tls_env_for",
    "user_tls_settings",
    "weed_s3_tls_args",
    "write_nats_tls_config",
]

#: Components with a server certificate: the four services, the browser face, NATS and S3.
TLS_SERVERS: Final = (*SERVICES, "edge", "nats", "s3")
#: The client certificate of the stack's users (SDK, CLI, Node client), named in stack.json.
USER_CLIENT: Final = "user"
#: Callers with a client certificate: every service and the face call others (or NATS), and the user.
TLS_CLIENTS: Final = (*SERVICES, "edge", USER_CLIENT)
#: Names every server certificate carries beside the stack's host: what local clients dial.
LOCAL_NAMES: Final = ("127.0.0.1", "localhost")
#: nats-server's TLS settings (clients and routes), written beside the certificates by
#: :func:`write_nats_tls_config` for servers started with ``--config`` (the compose stack's).
NATS_CONFIG_FILE: Final = "nats-tls.conf"
# The services that connect to NATS (metadata does not).
_NATS_CLIENTS: Final = frozenset({"upload", "processor", "download"})


def _server_name(component: str) -> str:
    return f"server-{component}"


def _client_name(caller: str) -> str:
    return f"client-{caller}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StackTls:
    """The CA's certificate, and the certificates issued for a stack's components and callers."""

    ca_file: Path
    servers: Mapping[str, IssuedCertificate]
    clients: Mapping[str, IssuedCertificate]

    def server(self, component: str) -> IssuedCertificate:
        return self.servers[component]

    def client(self, caller: str) -> IssuedCertificate:
        return self.clients[caller]

    def client_settings(self, caller: str = USER_CLIENT) -> TlsSettings:
        """What ``caller`` connects with: the CA and its client certificate."""
        issued = self.clients[caller]
        return TlsSettings(
            ca_file=str(self.ca_file),
            client_cert_file=str(issued.cert_file),
            client_key_file=str(issued.key_file),
        )


def ensure_stack_tls(
    directory: Path,
    *,
    hosts: Iterable[str],
    servers: Iterable[str] = TLS_SERVERS,
    clients: Iterable[str] = TLS_CLIENTS,
    server_names: Mapping[str, Iterable[str]] | None = None,
) -> StackTls:
    """The stack's CA in ``directory`` (made the first time) and its certificates, issued again only
    where missing or no longer good (see :mod:`filestore.stack.certificates`). ``hosts`` are the
    names and addresses every server is dialled at, beyond ``127.0.0.1`` and ``localhost``;
    ``server_names`` adds names of one server only (on a container network each has its own)."""
    authority = CertificateAuthority.load_or_create(directory)
    names = (*hosts, *LOCAL_NAMES)
    own = server_names or {}
    unknown = set(own) - set(TLS_SERVERS)
    if unknown:
        raise StackConfigError(f"no server certificate is issued for {', '.join(sorted(unknown))}")
    return StackTls(
        ca_file=authority.cert_file,
        servers={
            # NATS servers of a cluster dial each other's routes with their own certificate, and
            # each checks the other's as a client's.
            c: authority.server_certificate(
                _server_name(c), hosts=(*own.get(c, ()), *names), also_client=c == "nats"
            )
            for c in servers
        },
        clients={c: authority.client_certificate(_client_name(c)) for c in clients},
    )


def user_tls_settings(directory: Path) -> TlsSettings:
    """The user's side of a TLS stack whose certificates live in ``directory`` (what stack.json
    names), computed from the layout alone: the files exist once :func:`ensure_stack_tls` ran."""
    return TlsSettings(
        ca_file=str(directory / "ca.pem"),
        client_cert_file=str(directory / f"{_client_name(USER_CLIENT)}.pem"),
        client_key_file=str(directory / f"{_client_name(USER_CLIENT)}.key"),
    )


def tls_env_for(component: str, tls: StackTls, *, s3_tls: bool = True) -> dict[str, str]:
    """The ``FILESTORE_*`` variables that put ``component`` (a service or ``edge``) on TLS.

    A service serves with its server certificate and demands client certificates signed by the CA
    (``FILESTORE_TLS_CLIENT_CA_FILE``: mutual TLS); it calls other services with its client
    certificate, verifying them against the CA; it connects to NATS the same way
    (``FILESTORE_NATS_*``), and verifies storage against the CA when storage serves HTTPS (``s3_tls``:
    ``FILESTORE_S3_CA_FILE``). The browser face serves HTTPS with its certificate (the
    ``FILESTORE_TLS_CERT_FILE``/``KEY_FILE`` the services use, without a client CA: browsers bring
    tokens, not certificates) and calls the services as a client with a certificate of its own.
    """
    server, client, ca = tls.server(component), tls.client(component), str(tls.ca_file)
    env = {
        "FILESTORE_TLS_CERT_FILE": str(server.cert_file),
        "FILESTORE_TLS_KEY_FILE": str(server.key_file),
        "FILESTORE_TLS_CA_FILE": ca,
        "FILESTORE_TLS_CLIENT_CERT_FILE": str(client.cert_file),
        "FILESTORE_TLS_CLIENT_KEY_FILE": str(client.key_file),
    }
    if component == "edge":
        return env
    if component not in SERVICES:
        raise KeyError(component)
    env["FILESTORE_TLS_CLIENT_CA_FILE"] = ca
    if component in _NATS_CLIENTS:
        env.update(
            FILESTORE_NATS_CA_FILE=ca,
            FILESTORE_NATS_CLIENT_CERT_FILE=str(client.cert_file),
            FILESTORE_NATS_CLIENT_KEY_FILE=str(client.key_file),
        )
    if s3_tls:
        env["FILESTORE_S3_CA_FILE"] = ca
    return env


def nats_tls_config(tls: StackTls) -> str:
    """The ``tls {}`` block of a nats-server configuration: TLS required of every client, which must
    present a certificate the CA signed. (The monitor, served with ``https:``, uses the same
    certificate but asks for none.)"""
    server = tls.server("nats")
    return (
        "tls {\n"
        f"  cert_file: {_quoted(server.cert_file)}\n"
        f"  key_file: {_quoted(server.key_file)}\n"
        f"  ca_file: {_quoted(tls.ca_file)}\n"
        "  verify: true\n"
        # The default 0.5 s is tight for a handshake on a busy two-core machine.
        "  timeout: 5\n"
        "}\n"
    )


def nats_route_tls_config(tls: StackTls, *, indent: str = "  ") -> str:
    """The ``tls {}`` block of a nats-server ``cluster {}``: routes between the nodes are mutual TLS,
    each node presenting its certificate (good for both sides: :func:`ensure_stack_tls`) and checking
    the other's against the CA."""
    server = tls.server("nats")
    return (
        f"{indent}tls {{\n"
        f"{indent}  cert_file: {_quoted(server.cert_file)}\n"
        f"{indent}  key_file: {_quoted(server.key_file)}\n"
        f"{indent}  ca_file: {_quoted(tls.ca_file)}\n"
        f"{indent}  verify: true\n"
        f"{indent}  timeout: 5\n"
        f"{indent}}}\n"
    )


def write_nats_tls_config(tls: StackTls) -> Path:
    """:data:`NATS_CONFIG_FILE` beside the CA: the client ``tls {}`` block and the routes' one, for a
    nats-server started with ``--config`` whose name, ports and routes come from its flags (which
    nats-server merges over the file's ``cluster {}``)."""
    path = tls.ca_file.parent / NATS_CONFIG_FILE
    path.write_text(
        "# Written by `filestore-stack certs` with the certificates it names; edits are lost.\n"
        + nats_tls_config(tls)
        + "cluster {\n"
        + nats_route_tls_config(tls)
        + "}\n",
        encoding="utf-8",
    )
    return path


def weed_s3_tls_args(tls: StackTls, *, flag_prefix: str = "s3.") -> list[str]:
    """The SeaweedFS flags that serve the S3 API over HTTPS on its usual port (plaintext requests
    are then refused there): ``weed mini`` names them ``-s3.cert.file``, ``weed s3`` (``flag_prefix``
    ``""``) ``-cert.file``."""
    server = tls.server("s3")
    return [f"-{flag_prefix}cert.file={server.cert_file}", f"-{flag_prefix}key.file={server.key_file}"]


def _quoted(path: Path) -> str:
    # nats-server's configuration strings are JSON-compatible.
    return json.dumps(str(path))
