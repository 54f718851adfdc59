"""Where the services answer and who the caller is.

Three ways to say it, from most to least explicit: :class:`Endpoints` built by hand;
:meth:`Endpoints.from_env` (``FILESTORE_UPLOAD_ADDR``, ``FILESTORE_METADATA_ADDR``,
``FILESTORE_DOWNLOAD_ADDR``, ``FILESTORE_TOKEN``, and for TLS ``FILESTORE_TLS_CA_FILE`` with, where
the services demand client certificates, ``FILESTORE_TLS_CLIENT_CERT_FILE`` and
``FILESTORE_TLS_CLIENT_KEY_FILE``); :meth:`Endpoints.from_stack_json`, for the embedded development
stack (``make run`` / ``filestore stack run``), which mints a development token with the stack's own
secret and, for a TLS stack, takes its CA and client certificate from stack.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from filestore.core.auth import mint_token
from filestore.core.tls import TlsSettings

__all__ = ["ENV_VARS", "TLS_ENV_VARS", "ConfigurationError", "Endpoints", "client_tls", "default_stack_json"]

#: Environment variables read by :meth:`Endpoints.from_env`, by field.
ENV_VARS: Mapping[str, str] = {
    "upload": "FILESTORE_UPLOAD_ADDR",
    "metadata": "FILESTORE_METADATA_ADDR",
    "download": "FILESTORE_DOWNLOAD_ADDR",
    "token": "FILESTORE_TOKEN",
}

#: TLS files read by :meth:`Endpoints.from_env` (all optional), by TlsSettings field.
TLS_ENV_VARS: Mapping[str, str] = {
    "ca_file": "FILESTORE_TLS_CA_FILE",
    "client_cert_file": "FILESTORE_TLS_CLIENT_CERT_FILE",
    "client_key_file": "FILESTORE_TLS_CLIENT_KEY_FILE",
}


class ConfigurationError(Exception):
    """The SDK was not told (or could not find) where the services are, or who is calling."""


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """gRPC addresses (``host:port``) of the three services a client uses, and its bearer token.

    ``token`` may be a callable, called before every RPC, for tokens that are refreshed. ``tls``
    names a CA (and client certificate, for mutual TLS); without it channels are plaintext, which
    is for loopback and the embedded stack only. The CA is also trusted for storage (beside the
    system's CAs): a store behind the same private CA serves presigned URLs over HTTPS.
    """

    upload: str
    metadata: str
    download: str
    token: str | Callable[[], str]
    tls: TlsSettings | None = None

    def token_provider(self) -> Callable[[], str]:
        token = self.token
        if callable(token):
            return token
        return lambda: token

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Endpoints:
        env = os.environ if environ is None else environ
        values = {field: env.get(var, "").strip() for field, var in ENV_VARS.items()}
        missing = [ENV_VARS[field] for field, value in values.items() if not value]
        if missing:
            raise ConfigurationError(f"set {', '.join(missing)}")
        return cls(
            upload=values["upload"],
            metadata=values["metadata"],
            download=values["download"],
            token=values["token"],
            tls=client_tls(
                **{field: env.get(var, "").strip() or None for field, var in TLS_ENV_VARS.items()}
            ),
        )

    @classmethod
    def from_stack_json(
        cls, path: Path | None = None, *, subject: str = "dev", tenant: str = "dev"
    ) -> Endpoints:
        """The embedded stack described by ``stack.json`` (default: the one ``make run`` writes),
        calling as ``subject`` of ``tenant`` with tokens minted from the stack's secret."""
        try:
            from filestore.stack import StackConfigError, load_stack_json
        except ImportError:  # pragma: no cover - depends on how the SDK was installed
            raise ConfigurationError(
                "reading stack.json needs the stack extra: pip install 'filestore-client[stack]'"
            ) from None
        try:
            info = load_stack_json(path or default_stack_json())
        except StackConfigError as exc:
            raise ConfigurationError(str(exc)) from None
        endpoints = info.endpoints
        secret = endpoints.auth_secret
        return cls(
            upload=endpoints.upload_addr,
            metadata=endpoints.metadata_addr,
            download=endpoints.download_addr,
            # Minted per call (an HMAC, microseconds): a long upload never presents an expired token.
            token=lambda: mint_token(secret, subject=subject, tenant=tenant),
            tls=endpoints.tls,
        )


def client_tls(
    *, ca_file: str | None = None, client_cert_file: str | None = None, client_key_file: str | None = None
) -> TlsSettings | None:
    """A client's TLS files as :class:`TlsSettings`, checked (each readable, the certificate and its
    key together); None when none is given: plaintext."""
    given = {"ca_file": ca_file, "client_cert_file": client_cert_file, "client_key_file": client_key_file}
    if all(path is None for path in given.values()):
        return None
    for field, path in given.items():
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"{TLS_ENV_VARS[field]}={path!r} is not a readable file")
    if (client_cert_file is None) != (client_key_file is None):
        raise ConfigurationError(
            f"{TLS_ENV_VARS['client_cert_file']} and {TLS_ENV_VARS['client_key_file']} go together"
        )
    return TlsSettings(ca_file=ca_file, client_cert_file=client_cert_file, client_key_file=client_key_file)


def default_stack_json() -> Path:
    """``$FILESTORE_HOME/stack.json`` as ``filestore-stack`` resolves it (default ``.filestore/``)."""
    try:
        from filestore.stack import StackConfig, StackConfigError
    except ImportError:  # pragma: no cover
        raise ConfigurationError(
            "finding the local stack needs the stack extra: pip install 'filestore-client[stack]'"
        ) from None
    try:
        return StackConfig.from_env().paths.stack_json
    except StackConfigError as exc:
        raise ConfigurationError(str(exc)) from None
