"""Upload broker configuration (environment variables, read once at start)."""

from __future__ import annotations

from dataclasses import dataclass

from filestore.core.settings import (
    PREFIX,
    AuthSettings,
    Env,
    GrpcServerSettings,
    NatsSettings,
    S3Settings,
)

#: S3 refuses a single PUT above 5 GiB.
SINGLE_PUT_LIMIT = 5 * 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadSettings:
    server: GrpcServerSettings
    auth: AuthSettings
    s3: S3Settings
    nats: NatsSettings
    metadata_address: str
    #: Lifetime of a presigned URL.
    presign_ttl_s: int
    #: Lifetime of an upload session before the reaper may end it.
    upload_ttl_s: int
    #: Largest upload accepted.
    max_upload_bytes: int
    #: Content types accepted; empty accepts any well-formed type.
    allowed_content_types: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Env | None = None) -> UploadSettings:
        env = env or Env()
        return cls(
            server=GrpcServerSettings.from_env(env, default_listen="127.0.0.1:50052"),
            auth=AuthSettings.from_env(env),
            s3=S3Settings.from_env(env),
            nats=NatsSettings.from_env(env),
            metadata_address=env.address(f"{PREFIX}METADATA_ADDR", "127.0.0.1:50051"),
            presign_ttl_s=env.integer(f"{PREFIX}PRESIGN_TTL_S", 900, minimum=1, maximum=7 * 24 * 3600),
            upload_ttl_s=env.integer(f"{PREFIX}UPLOAD_TTL_S", 24 * 3600, minimum=60),
            max_upload_bytes=env.integer(
                f"{PREFIX}MAX_UPLOAD_BYTES", SINGLE_PUT_LIMIT, minimum=1, maximum=SINGLE_PUT_LIMIT
            ),
            allowed_content_types=env.csv(f"{PREFIX}ALLOWED_CONTENT_TYPES"),
        )
