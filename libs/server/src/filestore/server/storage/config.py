"""Which store: a value. Everything that tells one store from another (its name, where services and
clients reach it, its bucket and credentials, how long its calls may take) is in a frozen
:class:`StoreConfig`, and an :class:`~filestore.server.storage.ObjectStore` is built from one. A
process with several stores (regions, tiers) holds several values; nothing about a store is global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from filestore.server.settings import S3Settings

__all__ = ["DEFAULT_STORE", "StoreConfig", "StoreCredentials"]

#: The name of the one store a deployment configures through ``FILESTORE_S3_*``.
DEFAULT_STORE: Final = "default"


@dataclass(frozen=True, slots=True)
class StoreCredentials:
    """An S3 access key and its secret (kept out of ``repr``, so out of logs and tracebacks)."""

    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    """One object store.

    ``endpoint`` is where this service reaches storage; ``public_endpoint`` where clients do, and so
    what their presigned URLs name (they differ behind a container network or a load balancer).
    ``control_timeout_s`` bounds each attempt of a control call and every connect;
    ``read_timeout_s`` how long a streaming read may wait for its next bytes (see
    :mod:`filestore.server.storage.clients`). ``ca_file`` is the CA bundle an ``https`` endpoint is
    verified against (None: the system's CAs).
    """

    name: str
    endpoint: str
    public_endpoint: str
    region: str
    bucket: str
    credentials: StoreCredentials
    control_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, settings: S3Settings, *, name: str = DEFAULT_STORE) -> StoreConfig:
        """The store ``FILESTORE_S3_*`` configure."""
        return cls(
            name=name,
            endpoint=settings.endpoint,
            public_endpoint=settings.public_endpoint,
            region=settings.region,
            bucket=settings.bucket,
            credentials=StoreCredentials(settings.access_key, settings.secret_key),
            control_timeout_s=settings.control_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            ca_file=settings.ca_file,
        )
