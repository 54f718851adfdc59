"""TLS settings of a Filestore server and of the channels that call one, from the environment."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from filestore.core.env import PREFIX, Env, SettingsError

__all__ = ["TlsSettings", "client_ssl_context"]


def client_ssl_context(
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    system_roots: bool = False,
) -> ssl.SSLContext:
    """A context for the client side of TLS (NATS, HTTPS) that verifies servers against ``ca_file``
    and, given ``cert_file``/``key_file``, presents that certificate for mutual TLS.

    ``system_roots`` also trusts the system's CAs beside ``ca_file``: for storage, whose presigned URLs
    may name a public store (AWS S3) as well as one signed by a private CA. Without it, only
    ``ca_file`` is trusted (a private CA's servers: nothing else may impersonate them).
    """
    context = ssl.create_default_context(cafile=None if system_roots else ca_file)
    if system_roots and ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """TLS for a service's server and its clients. Without a certificate, plaintext (loopback only).

    ``client_ca_file`` on a server turns on mutual TLS: clients must present a certificate it signed.
    ``ca_file`` is what clients verify servers against; ``client_cert_file``/``client_key_file`` are the
    certificate a client presents for mutual TLS.
    """

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def client_context(self, *, system_roots: bool = False) -> ssl.SSLContext:
        """The client side of these settings as an :class:`ssl.SSLContext` (for HTTPS and NATS,
        which take one where gRPC takes file contents): see :func:`client_ssl_context`."""
        return client_ssl_context(
            ca_file=self.ca_file,
            cert_file=self.client_cert_file,
            key_file=self.client_key_file,
            system_roots=system_roots,
        )

    @classmethod
    def from_env(cls, env: Env) -> TlsSettings:
        values = {
            name: env.optional_str(f"{PREFIX}TLS_{name.upper()}")
            for name in (
                "cert_file",
                "key_file",
                "client_ca_file",
                "ca_file",
                "client_cert_file",
                "client_key_file",
            )
        }
        for name, path in values.items():
            if path is not None and not os.path.isfile(path):
                raise SettingsError(f"{PREFIX}TLS_{name.upper()}={path!r} is not a readable file")
        if (values["cert_file"] is None) != (values["key_file"] is None):
            raise SettingsError(f"{PREFIX}TLS_CERT_FILE and {PREFIX}TLS_KEY_FILE go together")
        if (values["client_cert_file"] is None) != (values["client_key_file"] is None):
            raise SettingsError(f"{PREFIX}TLS_CLIENT_CERT_FILE and {PREFIX}TLS_CLIENT_KEY_FILE go together")
        if values["client_ca_file"] is not None and values["cert_file"] is None:
            raise SettingsError(f"{PREFIX}TLS_CLIENT_CA_FILE needs {PREFIX}TLS_CERT_FILE")
        return cls(**values)
