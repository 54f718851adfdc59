"""The integration suite against a stack that runs elsewhere (`make test-stack`): the compose stack, or a
`make run` on another terminal or host. The stack is described by a ``stack.json`` (its path in
``FILESTORE_STACK_JSON``) or by ``FILESTORE_EXTERNAL_*`` environment variables; the session fixture
``stack`` then hands out its endpoints instead of starting processes, and tests that must start, stop or
kill components themselves (marker ``local_stack``, or a stack fixture of their own) are deselected."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

from filestore.core.tls import TlsSettings
from filestore.stack import (
    Stack,
    StackConfig,
    StackConfigError,
    StackCredentials,
    StackEndpoints,
    StackError,
    StackInfo,
    load_stack_json,
)
from filestore.stack.process import ManagedProcess

__all__ = ["EXTERNAL_PREFIX", "STACK_JSON_ENV", "ExternalStack", "external_stack_from_env"]

STACK_JSON_ENV: Final = "FILESTORE_STACK_JSON"
EXTERNAL_PREFIX: Final = "FILESTORE_EXTERNAL_"
#: Endpoint fields a client of the suite cannot do without; the others default to "" (unknown).
_REQUIRED_FIELDS: Final = (
    "metadata_addr",
    "upload_addr",
    "processor_addr",
    "download_addr",
    "s3_endpoint",
    "nats_url",
)
_REQUIRED_SECRETS: Final = ("auth_secret", "s3_access_key", "s3_secret_key")
_DEFAULTS: Final = {"s3_region": "us-east-1", "bucket": "filestore", "host": "127.0.0.1"}
_SERVICES: Final = ("metadata", "upload", "processor", "download")


class ExternalStack(Stack):
    """A running stack this test session did not start: its endpoints, and nothing to manage."""

    def __init__(self, info: StackInfo) -> None:
        super().__init__(StackConfig(home=info.home))
        self._info = info

    @property
    def endpoints(self) -> StackEndpoints:
        return self._info.endpoints

    def info(self) -> StackInfo:
        return self._info

    async def start(self) -> StackEndpoints:
        return self._info.endpoints

    async def stop(self) -> None:
        """Someone else runs it; it keeps running."""

    def process(self, component: str) -> ManagedProcess:
        self._not_ours(component)

    async def kill(self, component: str) -> None:
        self._not_ours(component)

    async def terminate(self, component: str) -> None:
        self._not_ours(component)

    async def restart(self, component: str) -> None:
        self._not_ours(component)

    def _not_ours(self, component: str) -> NoReturn:
        raise StackError(
            f"{component} runs in an external stack, which this test session cannot control; "
            "mark the test `local_stack`"
        )


def _info_from_variables(environ: Mapping[str, str]) -> StackInfo:
    missing = [
        f"{EXTERNAL_PREFIX}{name.upper()}"
        for name in (*_REQUIRED_FIELDS, *_REQUIRED_SECRETS)
        if not environ.get(f"{EXTERNAL_PREFIX}{name.upper()}", "").strip()
    ]
    if missing:
        raise StackConfigError(
            f"an external stack needs {', '.join(missing)}, which are not set (or give {STACK_JSON_ENV})"
        )

    def value(name: str, default: str = "") -> str:
        return environ.get(EXTERNAL_PREFIX + name.upper(), "").strip() or default

    service_keys = {
        service: (value(f"{service}_s3_access_key"), value(f"{service}_s3_secret_key"))
        for service in _SERVICES
        if environ.get(f"{EXTERNAL_PREFIX}{service.upper()}_S3_ACCESS_KEY")
    }
    credentials = StackCredentials(
        s3_access_key=value("s3_access_key"),
        s3_secret_key=value("s3_secret_key"),
        auth_secret=value("auth_secret"),
        service_s3_keys=service_keys,
    )
    # The plain address fields (host:port or URL); the others keep their defaults.
    fields = [field.name for field in dataclasses.fields(StackEndpoints) if field.type in ("str", str)]
    addresses: dict[str, Any] = {name: value(name, _DEFAULTS.get(name, "")) for name in fields}
    # A TLS stack: its CA, and the users' client certificate where the services ask for one.
    tls_files = {
        name: value(f"tls_{name}") or None for name in ("ca_file", "client_cert_file", "client_key_file")
    }
    tls = TlsSettings(**tls_files) if tls_files["ca_file"] else None
    endpoints = StackEndpoints(credentials=credentials, tls=tls, **addresses)
    return StackInfo(
        home=Path.cwd(),
        endpoints=endpoints,
        components=(),
        s3_credentials_file=Path(),
        auth_secret_file=Path(),
        logs_dir=Path(),
    )


def external_stack_from_env(environ: Mapping[str, str]) -> ExternalStack | None:
    """The external stack the environment names, or None to start one per session as usual.

    Raises :class:`StackConfigError` (naming the file or variable) when the description is unusable:
    a test run aimed at an external stack must never quietly test a local one instead.
    """
    stack_json = environ.get(STACK_JSON_ENV, "").strip()
    if stack_json:
        return ExternalStack(load_stack_json(Path(stack_json)))
    if any(name.startswith(EXTERNAL_PREFIX) for name in environ):
        return ExternalStack(_info_from_variables(environ))
    return None
