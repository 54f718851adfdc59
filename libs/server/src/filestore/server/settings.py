"""The settings of a Filestore service, from environment variables, parsed once into frozen, typed
objects with :class:`filestore.core.env.Env`: where it listens, observability, the object store, NATS,
how tokens are verified, and how long a call to another service may take.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field

from filestore.core.auth import TokenVerifier
from filestore.core.env import PREFIX, Env, SettingsError
from filestore.core.tls import TlsSettings, client_ssl_context

__all__ = [
    "DEFAULT_CALL_TIMEOUT_S",
    "AuthSettings",
    "GrpcServerSettings",
    "NatsSettings",
    "ObservabilitySettings",
    "S3Settings",
    "cors_origins_from_env",
    "metadata_timeout_from_env",
    "parse_cors_origins",
]


TRACING_EXPORTERS = ("none", "console", "file", "otlp")


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilitySettings:
    """Metrics and traces.

    ``metrics_port`` serves Prometheus metrics at ``/metrics`` on the host of ``FILESTORE_LISTEN``; 0
    (the default) serves none. ``tracing_exporter`` says where spans go: ``none`` (the default) records
    none, but a ``traceparent`` that arrives is still passed on (to metadata calls and events), so a
    trace that crosses Filestore stays one trace; ``console`` writes them as JSON lines to stderr,
    ``file`` to ``tracing_file``, ``otlp`` to an OpenTelemetry collector over gRPC.
    """

    metrics_port: int = 0
    tracing_exporter: str = "none"
    tracing_file: str | None = None
    tracing_otlp_endpoint: str = "http://127.0.0.1:4317"
    tracing_sample_ratio: float = 1.0

    @classmethod
    def from_env(cls, env: Env) -> ObservabilitySettings:
        exporter = env.string(f"{PREFIX}TRACING_EXPORTER", "none").lower()
        if exporter not in TRACING_EXPORTERS:
            raise SettingsError(
                f"{PREFIX}TRACING_EXPORTER={exporter!r} is not one of {', '.join(TRACING_EXPORTERS)}"
            )
        tracing_file = env.optional_str(f"{PREFIX}TRACING_FILE")
        if exporter == "file" and tracing_file is None:
            raise SettingsError(f"{PREFIX}TRACING_EXPORTER=file needs {PREFIX}TRACING_FILE")
        ratio = env.number(f"{PREFIX}TRACING_SAMPLE_RATIO", 1.0, minimum=0.0)
        if ratio > 1.0:
            raise SettingsError(f"{PREFIX}TRACING_SAMPLE_RATIO={ratio!r} must be between 0 and 1")
        return cls(
            metrics_port=env.integer(f"{PREFIX}METRICS_PORT", 0, minimum=0, maximum=65535),
            tracing_exporter=exporter,
            tracing_file=tracing_file,
            tracing_otlp_endpoint=env.url(
                f"{PREFIX}TRACING_OTLP_ENDPOINT", "http://127.0.0.1:4317", schemes=("http", "https")
            ),
            tracing_sample_ratio=ratio,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcServerSettings:
    """Where a service listens and how long it drains on shutdown."""

    listen: str
    shutdown_grace_s: float
    log_level: str
    tls: TlsSettings
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    #: A second, plaintext port on the host of ``listen`` that serves only the gRPC health service
    #: (0: none). For probes that cannot speak TLS (a kubelet's ``grpc`` probe) when ``listen`` is TLS.
    health_port: int = 0

    @classmethod
    def from_env(cls, env: Env, *, default_listen: str) -> GrpcServerSettings:
        level = env.string(f"{PREFIX}LOG_LEVEL", "info").lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise SettingsError(f"{PREFIX}LOG_LEVEL={level!r} is not one of debug, info, warning, error")
        return cls(
            listen=env.address(f"{PREFIX}LISTEN", default_listen),
            shutdown_grace_s=env.number(f"{PREFIX}SHUTDOWN_GRACE_S", 10.0, minimum=0.0),
            log_level=level,
            tls=TlsSettings.from_env(env),
            observability=ObservabilitySettings.from_env(env),
            health_port=env.integer(f"{PREFIX}HEALTH_PORT", 0, minimum=0, maximum=65535),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Settings:
    """The object store ``FILESTORE_S3_*`` configure: endpoint and credentials for control calls, and
    the bucket (a service turns them into its store with ``StoreConfig.from_settings``).

    ``public_endpoint`` is the address clients use in presigned URLs when it differs from the
    address services reach storage at (a container network, a load balancer).

    ``control_timeout_s`` bounds each attempt of a control call (HEAD, multipart bookkeeping, deletes,
    listings: storage answers them in milliseconds) and every connect; ``read_timeout_s`` is how long
    a streaming read of an object's bytes may wait for the next ones (see
    :mod:`filestore.server.storage.clients`).

    ``ca_file`` (``FILESTORE_S3_CA_FILE``) is a CA bundle that an ``https`` endpoint's certificate is
    verified against instead of the system's (a store behind a private CA); None: the system's.
    """

    endpoint: str
    public_endpoint: str
    region: str
    access_key: str
    secret_key: str
    bucket: str
    control_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    ca_file: str | None = None

    @classmethod
    def from_env(cls, env: Env) -> S3Settings:
        endpoint = env.url(f"{PREFIX}S3_ENDPOINT", schemes=("http", "https"))
        return cls(
            endpoint=endpoint,
            public_endpoint=env.url(f"{PREFIX}S3_PUBLIC_ENDPOINT", endpoint, schemes=("http", "https")),
            region=env.string(f"{PREFIX}S3_REGION", "us-east-1"),
            access_key=env.string(f"{PREFIX}S3_ACCESS_KEY"),
            secret_key=env.string(f"{PREFIX}S3_SECRET_KEY"),
            bucket=env.string(f"{PREFIX}S3_BUCKET", "filestore"),
            control_timeout_s=env.number(f"{PREFIX}S3_CONTROL_TIMEOUT_S", 5.0, minimum=0.1),
            read_timeout_s=env.number(f"{PREFIX}S3_READ_TIMEOUT_S", 60.0, minimum=0.1),
            ca_file=_readable_file(env, f"{PREFIX}S3_CA_FILE"),
        )


#: How long a call to another Filestore service may take, unless the RPC being served has less time left.
DEFAULT_CALL_TIMEOUT_S = 10.0


def metadata_timeout_from_env(env: Env) -> float:
    """``FILESTORE_METADATA_TIMEOUT_S``: the deadline of a call to the metadata service (cut to what
    the RPC being served has left, see :mod:`filestore.server.deadlines`)."""
    return env.number(f"{PREFIX}METADATA_TIMEOUT_S", DEFAULT_CALL_TIMEOUT_S, minimum=0.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsSettings:
    """The NATS server(s) and the JetStream stream that carries file events.

    ``ca_file`` (``FILESTORE_NATS_CA_FILE``) is what the server's certificate is verified against
    (only it: a private CA's NATS may not be impersonated by any publicly trusted certificate);
    ``client_cert_file``/``client_key_file`` (``FILESTORE_NATS_CLIENT_CERT_FILE``/``_KEY_FILE``) the
    certificate presented to a server that verifies its clients (nats-server ``tls { verify: true }``).
    A ``tls://`` URL without a CA verifies against the system's CAs.

    ``urls`` (``FILESTORE_NATS_URL``, comma separated) are the servers a client may connect to: in a
    cluster, list several, so that a client starting while one is down still connects (once connected
    it learns the others from the cluster too). ``replicas`` (``FILESTORE_NATS_REPLICAS``, 1 to 5) is
    how many servers keep a copy of the stream and of the key-value buckets that Filestore creates:
    3 in a three-node cluster, so that losing one server loses no event. It applies when the stream or
    bucket is created; a stream's is also brought up to date at every start, a bucket's is not.
    """

    urls: tuple[str, ...]
    stream: str
    subject_prefix: str
    replicas: int = 1
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    @property
    def url(self) -> str:
        """The first server (for messages naming where NATS is)."""
        return self.urls[0]

    @classmethod
    def from_env(cls, env: Env) -> NatsSettings:
        name = f"{PREFIX}NATS_URL"
        urls = env.csv(name)
        if not urls:
            raise SettingsError(f"{name} is required but not set")
        for url in urls:
            env_of_one = Env({name: url})
            env_of_one.url(name, schemes=("nats", "tls"))
        files = {
            field: _readable_file(env, f"{PREFIX}NATS_{field.upper()}")
            for field in ("ca_file", "client_cert_file", "client_key_file")
        }
        if (files["client_cert_file"] is None) != (files["client_key_file"] is None):
            raise SettingsError(f"{PREFIX}NATS_CLIENT_CERT_FILE and {PREFIX}NATS_CLIENT_KEY_FILE go together")
        return cls(
            urls=urls,
            stream=env.string(f"{PREFIX}NATS_STREAM", "FILES"),
            subject_prefix=env.string(f"{PREFIX}NATS_SUBJECT_PREFIX", "files"),
            replicas=env.integer(f"{PREFIX}NATS_REPLICAS", 1, minimum=1, maximum=5),
            **files,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """What the connection verifies the server with (and presents), or None for plaintext."""
        if self.ca_file is None and self.client_cert_file is None:
            return None
        return client_ssl_context(
            ca_file=self.ca_file, cert_file=self.client_cert_file, key_file=self.client_key_file
        )


def _readable_file(env: Env, name: str) -> str | None:
    path = env.optional_str(name)
    if path is not None and not os.path.isfile(path):
        raise SettingsError(f"{name}={path!r} is not a readable file")
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """How tokens are verified.

    ``secret`` (HS256) is always set: services sign their own identity tokens and page tokens with it.
    User tokens may instead come from an identity provider signing with RS256 or ES256: give its public
    key (``public_key_file``, PEM) or its key set (``jwks_url``).
    """

    secret: str
    public_key_file: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None

    @classmethod
    def from_env(cls, env: Env) -> AuthSettings:
        secret = env.string(f"{PREFIX}AUTH_SECRET")
        if len(secret) < 32:
            raise SettingsError(f"{PREFIX}AUTH_SECRET must be at least 32 characters")
        public_key_file = env.optional_str(f"{PREFIX}AUTH_PUBLIC_KEY_FILE")
        if public_key_file is not None and not os.path.isfile(public_key_file):
            raise SettingsError(f"{PREFIX}AUTH_PUBLIC_KEY_FILE={public_key_file!r} is not a readable file")
        jwks_url = env.optional_str(f"{PREFIX}AUTH_JWKS_URL")
        if jwks_url is not None:
            env.url(f"{PREFIX}AUTH_JWKS_URL", schemes=("http", "https"))
        return cls(
            secret=secret,
            public_key_file=public_key_file,
            jwks_url=jwks_url,
            issuer=env.optional_str(f"{PREFIX}AUTH_ISSUER"),
            audience=env.optional_str(f"{PREFIX}AUTH_AUDIENCE"),
        )

    def token_verifier(self) -> TokenVerifier:
        """The verifier of the tokens these settings accept (the public key file read now)."""
        public_key = None
        if self.public_key_file is not None:
            with open(self.public_key_file, "rb") as handle:
                public_key = handle.read()
        return TokenVerifier(
            self.secret,
            public_key_pem=public_key,
            jwks_url=self.jwks_url,
            issuer=self.issuer,
            audience=self.audience,
        )


#: An exact origin: scheme, host and optional port, nothing else (no wildcard, path or trailing slash).
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def parse_cors_origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    """``FILESTORE_CORS_ORIGINS``: exact origins only. ``*`` is refused: any web page could then
    drive uploads with a user's presigned URLs and read storage's answers."""
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise SettingsError(
                f"{PREFIX}CORS_ORIGINS entry {origin!r} is not an origin like https://app.example.com "
                "(wildcards are not accepted)"
            )
    return origins


def cors_origins_from_env(env: Env) -> tuple[str, ...]:
    """``FILESTORE_CORS_ORIGINS`` (comma-separated, default none): the web origins allowed to call
    Filestore from a page. One list for both places a browser reaches: the bucket's CORS rules (the
    broker applies them) and the browser face (filestore-edge)."""
    return parse_cors_origins(env.csv(f"{PREFIX}CORS_ORIGINS"))
