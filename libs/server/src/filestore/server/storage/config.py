"""Which store: a value. Everything that tells one store from another (its name, where services and
clients reach it, its bucket and credentials, how long its calls may take) is in a frozen
:class:`StoreConfig`, and an :class:`~filestore.server.storage.ObjectStore` is built from one. A
process with several stores (regions, tiers) holds several values; nothing about a store is global.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from filestore.core.env import PREFIX, Env, SettingsError
from filestore.server.settings import S3Settings

__all__ = ["DEFAULT_STORE", "StoreConfig", "StoreCredentials", "StoreSet"]

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
    #: The storage classes this store accepts (``STANDARD`` always); for tiers.
    storage_classes: tuple[str, ...] = ("STANDARD",)
    #: Whether the store copies objects server-side (``CopyObject``/``UploadPartCopy``). A copy
    #: between two stores is a server-side copy only when both are buckets of one endpoint.
    part_copy: bool = False

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


#: A store's name: what the catalogue records per file, so short and stable.
_STORE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_STORE_FIELDS: Final = frozenset(
    {
        "name", "region", "endpoint", "public_endpoint", "bucket", "access_key", "secret_key",
        "storage_classes", "part_copy", "ca_file",
    }
)  # fmt: skip


def _store_from_json(entry: Any, *, where: str, base: S3Settings) -> StoreConfig:
    if not isinstance(entry, dict):
        raise SettingsError(f"{where}: each store is a JSON object")
    unknown = set(entry) - _STORE_FIELDS
    if unknown:
        raise SettingsError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")

    def text(key: str, default: str | None = None) -> str:
        value = entry.get(key, default)
        if not isinstance(value, str) or not value:
            raise SettingsError(f"{where}: {key!r} must be a non-empty string")
        return value

    name = text("name")
    if not _STORE_NAME.match(name):
        raise SettingsError(f"{where}: store name {name!r} must be 1-63 of [a-z0-9-], starting alphanumeric")
    endpoint = text("endpoint")
    for key, url in (("endpoint", endpoint), ("public_endpoint", entry.get("public_endpoint", endpoint))):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SettingsError(f"{where}: store {name!r} {key} must be an http(s) URL")
    classes = entry.get("storage_classes", ["STANDARD"])
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise SettingsError(f"{where}: store {name!r} storage_classes must be a list of names")
    part_copy = entry.get("part_copy", False)
    if not isinstance(part_copy, bool):
        raise SettingsError(f"{where}: store {name!r} part_copy must be true or false")
    ca_file = entry.get("ca_file")
    if ca_file is not None and not (isinstance(ca_file, str) and os.path.isfile(ca_file)):
        raise SettingsError(f"{where}: store {name!r} ca_file must name a readable file")
    return StoreConfig(
        name=name,
        endpoint=endpoint,
        public_endpoint=text("public_endpoint", endpoint),
        region=text("region"),
        bucket=text("bucket"),
        credentials=StoreCredentials(text("access_key"), text("secret_key")),
        control_timeout_s=base.control_timeout_s,
        read_timeout_s=base.read_timeout_s,
        storage_classes=tuple(dict.fromkeys(["STANDARD", *classes])),
        part_copy=part_copy,
        ca_file=ca_file,
    )


@dataclass(frozen=True, slots=True)
class StoreSet:
    """Every store a service knows, by name, and the one placement falls back to.

    ``FILESTORE_S3_*`` configure the store named ``default`` (one store, as before there were
    several); ``FILESTORE_STORES`` adds more: a JSON list of objects (``name``, ``region``,
    ``endpoint``, ``public_endpoint``, ``bucket``, ``access_key``, ``secret_key``,
    ``storage_classes``, ``part_copy``, ``ca_file`` for an ``https`` endpoint behind a private CA), or
    ``@/path/to/stores.json`` naming a file that holds it.
    Each service is given its own keys for each store, as it is for the default one (least
    privilege). ``FILESTORE_DEFAULT_STORE`` names where files go when neither residency nor the
    client's hint decides (``default`` unless set).
    """

    stores: tuple[StoreConfig, ...]
    default: str = DEFAULT_STORE

    def __post_init__(self) -> None:
        names = [store.name for store in self.stores]
        if len(set(names)) != len(names):
            raise SettingsError(f"{PREFIX}STORES names a store twice ({', '.join(names)})")
        if self.default not in names:
            raise SettingsError(f"{PREFIX}DEFAULT_STORE={self.default!r} is not a configured store")

    def __iter__(self) -> Iterator[StoreConfig]:
        return iter(self.stores)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(store.name for store in self.stores)

    def get(self, name: str) -> StoreConfig | None:
        return next((store for store in self.stores if store.name == name), None)

    @classmethod
    def single(cls, settings: S3Settings) -> StoreSet:
        """The one store ``FILESTORE_S3_*`` configure, named ``default``."""
        return cls((StoreConfig.from_settings(settings),))

    @classmethod
    def from_env(cls, env: Env, s3: S3Settings) -> StoreSet:
        raw = env.optional_str(f"{PREFIX}STORES")
        extra: list[StoreConfig] = []
        if raw is not None:
            where = f"{PREFIX}STORES"
            if raw.startswith("@"):
                where = raw[1:]
                try:
                    raw = Path(where).read_text(encoding="utf-8")
                except OSError as error:
                    raise SettingsError(f"{PREFIX}STORES: cannot read {where} ({error})") from None
            try:
                entries = json.loads(raw)
            except ValueError as error:
                raise SettingsError(f"{where} is not JSON ({error})") from None
            if not isinstance(entries, list):
                raise SettingsError(f"{where} must be a JSON list of stores")
            extra = [_store_from_json(entry, where=where, base=s3) for entry in entries]
        default = StoreConfig.from_settings(s3)
        # The default store's tiers (``FILESTORE_S3_STORAGE_CLASSES``, comma-separated): what lifecycle
        # rules may move its files to; ``STANDARD`` always.
        classes = [name.strip() for name in env.string(f"{PREFIX}S3_STORAGE_CLASSES", "").split(",")]
        default = dataclasses.replace(
            default, storage_classes=tuple(dict.fromkeys(["STANDARD", *(name for name in classes if name)]))
        )
        return cls(
            (default, *extra),
            default=env.string(f"{PREFIX}DEFAULT_STORE", DEFAULT_STORE),
        )
