"""Download signer configuration (environment variables, read once at start)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from filestore.core.env import PREFIX, Env, SettingsError
from filestore.server.settings import (
    DEFAULT_CALL_TIMEOUT_S,
    AuthSettings,
    GrpcServerSettings,
    NatsSettings,
    S3Settings,
    metadata_timeout_from_env,
)
from filestore.server.storage import StoreSet

CDN_SIGNING = ("none", "cloudfront", "cloudfront-custom", "nginx")


@dataclass(frozen=True, slots=True, kw_only=True)
class CdnSettings:
    """Where public files are served from, and how their URLs are signed."""

    base_url: str
    signing: str
    cloudfront_key_pair_id: str
    cloudfront_private_key_file: Path | None
    nginx_secret: str

    @classmethod
    def from_env(cls, env: Env) -> CdnSettings | None:
        base_url = env.optional_str(f"{PREFIX}CDN_BASE_URL")
        if base_url is None:
            return None
        env.url(f"{PREFIX}CDN_BASE_URL", schemes=("http", "https"))
        signing = env.string(f"{PREFIX}CDN_SIGNING", "none")
        if signing not in CDN_SIGNING:
            raise SettingsError(f"{PREFIX}CDN_SIGNING={signing!r} is not one of {', '.join(CDN_SIGNING)}")
        key_file = env.optional_str(f"{PREFIX}CDN_CLOUDFRONT_PRIVATE_KEY_FILE")
        settings = cls(
            base_url=base_url,
            signing=signing,
            cloudfront_key_pair_id=env.optional_str(f"{PREFIX}CDN_CLOUDFRONT_KEY_PAIR_ID") or "",
            cloudfront_private_key_file=Path(key_file) if key_file else None,
            nginx_secret=env.optional_str(f"{PREFIX}CDN_NGINX_SECRET") or "",
        )
        if signing.startswith("cloudfront") and (
            not settings.cloudfront_key_pair_id or settings.cloudfront_private_key_file is None
        ):
            raise SettingsError(
                f"{PREFIX}CDN_SIGNING={signing} needs {PREFIX}CDN_CLOUDFRONT_KEY_PAIR_ID and "
                f"{PREFIX}CDN_CLOUDFRONT_PRIVATE_KEY_FILE"
            )
        if signing == "nginx" and len(settings.nginx_secret) < 16:
            raise SettingsError(f"{PREFIX}CDN_SIGNING=nginx needs {PREFIX}CDN_NGINX_SECRET (16+ characters)")
        return settings


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadSettings:
    server: GrpcServerSettings
    auth: AuthSettings
    s3: S3Settings
    #: Every store: ``s3``'s (named ``default``) and ``FILESTORE_STORES``' (see
    #: :class:`filestore.server.storage.StoreSet`); only ``s3``'s when not given.
    store_set: StoreSet | None = None
    #: For the audit events (files.file.downloaded); without it no audit events are published.
    nats: NatsSettings | None
    metadata_address: str
    #: Deadline of a call to the metadata service (less when the RPC being served has less time left).
    metadata_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    #: URL lifetime when the caller asks for none.
    default_ttl_s: int
    #: Bounds every asked lifetime is clamped to.
    min_ttl_s: int
    max_ttl_s: int
    cdn: CdnSettings | None

    @property
    def stores(self) -> StoreSet:
        return self.store_set if self.store_set is not None else StoreSet.single(self.s3)

    @classmethod
    def from_env(cls, env: Env | None = None) -> DownloadSettings:
        env = env or Env()
        min_ttl = env.integer(f"{PREFIX}DOWNLOAD_MIN_TTL_S", 30, minimum=1)
        max_ttl = env.integer(f"{PREFIX}DOWNLOAD_MAX_TTL_S", 3600, minimum=1, maximum=7 * 24 * 3600)
        default_ttl = env.integer(f"{PREFIX}DOWNLOAD_TTL_S", 300, minimum=1)
        if not min_ttl <= default_ttl <= max_ttl:
            raise SettingsError(
                f"{PREFIX}DOWNLOAD_TTL_S must lie between "
                f"{PREFIX}DOWNLOAD_MIN_TTL_S and {PREFIX}DOWNLOAD_MAX_TTL_S"
            )
        return cls(
            server=GrpcServerSettings.from_env(env, default_listen="127.0.0.1:50054"),
            auth=AuthSettings.from_env(env),
            s3=S3Settings.from_env(env),
            store_set=StoreSet.from_env(env, S3Settings.from_env(env)),
            nats=NatsSettings.from_env(env) if env.optional_str(f"{PREFIX}NATS_URL") else None,
            metadata_address=env.service_address(f"{PREFIX}METADATA_ADDR", "127.0.0.1:50051"),
            metadata_timeout_s=metadata_timeout_from_env(env),
            default_ttl_s=default_ttl,
            min_ttl_s=min_ttl,
            max_ttl_s=max_ttl,
            cdn=CdnSettings.from_env(env),
        )
