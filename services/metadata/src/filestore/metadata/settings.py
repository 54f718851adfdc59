"""Metadata service configuration (environment variables, read once at start)."""

from __future__ import annotations

from dataclasses import dataclass

from filestore.core.env import PREFIX, Env
from filestore.server.settings import AuthSettings, GrpcServerSettings, S3Settings
from filestore.server.storage import StoreSet


def database_url_from_env(env: Env) -> str:
    """``FILESTORE_DATABASE_URL``, read the same way by the service and by ``filestore-fsck``."""
    return env.url(
        f"{PREFIX}DATABASE_URL",
        "sqlite+aiosqlite:///filestore-metadata.db",
        schemes=("sqlite+aiosqlite", "postgresql+asyncpg"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataSettings:
    server: GrpcServerSettings
    auth: AuthSettings
    #: SQLAlchemy async URL: ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``.
    database_url: str
    #: Apply Alembic migrations at start (the embedded stack does; a deployment may run them apart).
    migrate_on_start: bool
    #: Storage, to delete objects no file needs any more; without it they are left to the reconciler.
    s3: S3Settings | None
    #: Every store (``FILESTORE_S3_*``'s, named ``default``, and ``FILESTORE_STORES``'), when storage is
    #: configured: an object no file needs any more is deleted from each.
    stores: StoreSet | None = None

    @classmethod
    def from_env(cls, env: Env | None = None) -> MetadataSettings:
        env = env or Env()
        s3 = S3Settings.from_env(env) if env.optional_str(f"{PREFIX}S3_ENDPOINT") else None
        return cls(
            server=GrpcServerSettings.from_env(env, default_listen="127.0.0.1:50051"),
            auth=AuthSettings.from_env(env),
            database_url=database_url_from_env(env),
            migrate_on_start=env.boolean(f"{PREFIX}MIGRATE_ON_START", True),
            s3=s3,
            stores=StoreSet.from_env(env, s3) if s3 is not None else None,
        )
