"""Configuration of the browser face (environment variables, read once at start)."""

from __future__ import annotations

from dataclasses import dataclass

from filestore.core.env import PREFIX, Env
from filestore.server.settings import DEFAULT_CALL_TIMEOUT_S, GrpcServerSettings, cors_origins_from_env

DEFAULT_LISTEN = "127.0.0.1:8090"


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeSettings:
    """Where the face listens (HTTP/1.1, TLS with ``FILESTORE_TLS_CERT_FILE``), which page origins
    may call it, and where the gRPC services it forwards to are."""

    #: ``listen`` is this face's HTTP address; ``tls`` serves HTTPS and reaches the services over TLS.
    server: GrpcServerSettings
    #: ``FILESTORE_CORS_ORIGINS``: the same list the broker applies to the bucket's CORS rules.
    cors_origins: tuple[str, ...]
    upload_address: str
    metadata_address: str
    download_address: str
    processor_address: str
    #: The deadline of a forwarded call when the browser sends no ``Connect-Timeout-Ms`` (or a longer
    #: one): a page that went away must not hold a service's call open for ever.
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Env | None = None) -> EdgeSettings:
        env = env or Env()
        return cls(
            server=GrpcServerSettings.from_env(env, default_listen=DEFAULT_LISTEN),
            cors_origins=cors_origins_from_env(env),
            upload_address=env.service_address(f"{PREFIX}UPLOAD_ADDR", "127.0.0.1:50052"),
            metadata_address=env.service_address(f"{PREFIX}METADATA_ADDR", "127.0.0.1:50051"),
            download_address=env.service_address(f"{PREFIX}DOWNLOAD_ADDR", "127.0.0.1:50054"),
            processor_address=env.service_address(f"{PREFIX}PROCESSOR_ADDR", "127.0.0.1:50053"),
            call_timeout_s=env.number(f"{PREFIX}EDGE_CALL_TIMEOUT_S", DEFAULT_CALL_TIMEOUT_S, minimum=0.1),
        )
