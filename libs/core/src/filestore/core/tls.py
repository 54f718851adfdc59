"""TLS settings of a Filestore server and of the channels that call one, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from filestore.core.env import PREFIX, Env, SettingsError

__all__ = ["TlsSettings"]


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
