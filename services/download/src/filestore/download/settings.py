"""Download signer configuration (environment variables, read once at start)."""

from __future__ import annotations

from dataclasses import dataclass

from filestore.core.settings import PREFIX, AuthSettings, Env, GrpcServerSettings, S3Settings, SettingsError


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadSettings:
    server: GrpcServerSettings
    auth: AuthSettings
    s3: S3Settings
    metadata_address: str
    #: URL lifetime when the caller asks for none.
    default_ttl_s: int
    #: Bounds every asked lifetime is clamped to.
    min_ttl_s: int
    max_ttl_s: int

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
            metadata_address=env.address(f"{PREFIX}METADATA_ADDR", "127.0.0.1:50051"),
            default_ttl_s=default_ttl,
            min_ttl_s=min_ttl,
            max_ttl_s=max_ttl,
        )
