"""Upload broker configuration (environment variables, read once at start)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from filestore.core.env import PREFIX, Env, SettingsError
from filestore.server.settings import (
    DEFAULT_CALL_TIMEOUT_S,
    AuthSettings,
    GrpcServerSettings,
    NatsSettings,
    S3Settings,
    cors_origins_from_env,
    metadata_timeout_from_env,
)
from filestore.server.storage import StoreSet
from filestore.upload.session import SESSION_KEY_MIN_CHARS

__all__ = ["MAX_OBJECT_BYTES", "SINGLE_PUT_LIMIT", "TenantLimits", "UploadSettings", "session_key_from_env"]

#: S3 refuses a single PUT (and a POST policy upload) above 5 GiB.
SINGLE_PUT_LIMIT = 5 * 1024**3
#: The S3 object size limit, and so the largest multipart upload.
MAX_OBJECT_BYTES = 5 * 1024**4
MIB = 1024**2
# A browser origin: scheme, host, optional port; nothing after it (no path, no wildcard).


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantLimits:
    """What one tenant may upload, on top of the service-wide limits (it can only narrow them)."""

    max_upload_bytes: int | None = None
    allowed_content_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadSettings:
    server: GrpcServerSettings
    auth: AuthSettings
    s3: S3Settings
    #: Every store: ``s3``'s (named ``default``) and ``FILESTORE_STORES``' (see
    #: :class:`filestore.server.storage.StoreSet`); only ``s3``'s when not given.
    store_set: StoreSet | None = None
    nats: NatsSettings
    metadata_address: str
    #: Deadline of a call to the metadata service (less when the RPC being served has less time left).
    metadata_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    #: Lifetime of a presigned URL.
    presign_ttl_s: int
    #: Lifetime of an upload session before the reaper may end it.
    upload_ttl_s: int
    #: Largest upload accepted.
    max_upload_bytes: int
    #: Content types accepted; empty accepts any well-formed type.
    allowed_content_types: tuple[str, ...]
    #: Uploads of unspecified kind above this size are multipart.
    multipart_threshold_bytes: int = 64 * MIB
    #: How many part URLs CreateUpload signs up front; SignParts gives the rest.
    first_part_urls: int = 16
    #: Per-tenant limits, by tenant id.
    tenant_limits: Mapping[str, TenantLimits] = field(default_factory=dict)
    #: Browser origins allowed to send bytes to the bucket; empty means none.
    cors_origins: tuple[str, ...] = ()
    #: Seconds between reaper passes; 0 disables the reaper in this process.
    reaper_interval_s: float = 60.0
    #: Uploads claimed per reaper pass.
    reaper_batch: int = 100
    #: How long a claim holds before another broker may reap the same upload.
    reaper_lease_s: int = 300
    #: The key that seals upload session tokens (:mod:`filestore.upload.session`); every broker
    #: replica must hold the same one. Kept out of ``repr``, so out of logs and tracebacks.
    session_key: str = field(repr=False)

    @property
    def stores(self) -> StoreSet:
        return self.store_set if self.store_set is not None else StoreSet.single(self.s3)

    @classmethod
    def from_env(cls, env: Env | None = None) -> UploadSettings:
        env = env or Env()
        auth = AuthSettings.from_env(env)
        return cls(
            server=GrpcServerSettings.from_env(env, default_listen="127.0.0.1:50052"),
            auth=auth,
            s3=S3Settings.from_env(env),
            store_set=StoreSet.from_env(env, S3Settings.from_env(env)),
            nats=NatsSettings.from_env(env),
            metadata_address=env.service_address(f"{PREFIX}METADATA_ADDR", "127.0.0.1:50051"),
            metadata_timeout_s=metadata_timeout_from_env(env),
            presign_ttl_s=env.integer(f"{PREFIX}PRESIGN_TTL_S", 900, minimum=1, maximum=7 * 24 * 3600),
            upload_ttl_s=env.integer(f"{PREFIX}UPLOAD_TTL_S", 24 * 3600, minimum=60),
            max_upload_bytes=env.integer(
                f"{PREFIX}MAX_UPLOAD_BYTES", SINGLE_PUT_LIMIT, minimum=1, maximum=MAX_OBJECT_BYTES
            ),
            allowed_content_types=env.csv(f"{PREFIX}ALLOWED_CONTENT_TYPES"),
            multipart_threshold_bytes=env.integer(
                f"{PREFIX}MULTIPART_THRESHOLD_BYTES", 64 * MIB, minimum=5 * MIB, maximum=SINGLE_PUT_LIMIT
            ),
            first_part_urls=env.integer(f"{PREFIX}FIRST_PART_URLS", 16, minimum=0, maximum=1000),
            tenant_limits=parse_tenant_limits(env.optional_str(f"{PREFIX}TENANT_LIMITS")),
            cors_origins=cors_origins_from_env(env),
            reaper_interval_s=env.number(f"{PREFIX}REAPER_INTERVAL_S", 60.0, minimum=0.0),
            reaper_batch=env.integer(f"{PREFIX}REAPER_BATCH", 100, minimum=1, maximum=500),
            reaper_lease_s=env.integer(f"{PREFIX}REAPER_LEASE_S", 300, minimum=1, maximum=3600),
            session_key=session_key_from_env(env, auth_secret=auth.secret),
        )

    def limits_for(self, tenant: str) -> tuple[int, tuple[tuple[str, ...], ...]]:
        """The largest size and the content-type lists (all must match) that apply to ``tenant``."""
        own = self.tenant_limits.get(tenant)
        maximum = self.max_upload_bytes
        type_lists = [self.allowed_content_types] if self.allowed_content_types else []
        if own is not None:
            if own.max_upload_bytes is not None:
                maximum = min(maximum, own.max_upload_bytes)
            if own.allowed_content_types:
                type_lists.append(own.allowed_content_types)
        return maximum, tuple(type_lists)


def session_key_from_env(env: Env, *, auth_secret: str) -> str:
    """``FILESTORE_UPLOAD_SESSION_KEY``: 32 characters or more. Unset, the auth secret stands in (the
    tokens' own key is derived from it under a label of its own, as page tokens' are): every broker
    replica holds that one already, and whoever holds it can mint any caller's identity anyway, so
    a session key derived from it grants nothing more."""
    name = f"{PREFIX}UPLOAD_SESSION_KEY"
    key = env.optional_str(name)
    if key is None:
        return auth_secret
    if len(key) < SESSION_KEY_MIN_CHARS:
        raise SettingsError(f"{name} must be at least {SESSION_KEY_MIN_CHARS} characters")
    return key


def parse_tenant_limits(raw: str | None) -> dict[str, TenantLimits]:
    """``FILESTORE_TENANT_LIMITS``: a JSON object, e.g.
    ``{"acme": {"max_upload_bytes": 1048576, "allowed_content_types": ["image/*"]}}``."""
    name = f"{PREFIX}TENANT_LIMITS"
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise SettingsError(f"{name} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{name} must be a JSON object keyed by tenant")
    limits: dict[str, TenantLimits] = {}
    for tenant, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - {"max_upload_bytes", "allowed_content_types"}:
            raise SettingsError(
                f"{name}[{tenant!r}] must be an object with max_upload_bytes and/or allowed_content_types"
            )
        maximum = entry.get("max_upload_bytes")
        if maximum is not None and (not isinstance(maximum, int) or isinstance(maximum, bool) or maximum < 1):
            raise SettingsError(f"{name}[{tenant!r}].max_upload_bytes must be a positive integer")
        types = entry.get("allowed_content_types", [])
        if not isinstance(types, list) or not all(isinstance(item, str) and item for item in types):
            raise SettingsError(f"{name}[{tenant!r}].allowed_content_types must be a list of strings")
        limits[tenant] = TenantLimits(
            max_upload_bytes=maximum, allowed_content_types=tuple(item.lower() for item in types)
        )
    return limits
