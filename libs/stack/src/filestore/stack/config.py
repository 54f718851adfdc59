"""Configuration of the embedded stack: ports, the state directory and which components run.

Everything is a frozen dataclass. :meth:`StackConfig.from_env` is what ``filestore-stack run``
uses; tests build a :class:`StackConfig` directly, usually with :meth:`StackPorts.free`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Final

from filestore.stack.errors import StackConfigError

__all__ = [
    "ADMIN_GRPC_OFFSET",
    "ALL_COMPONENTS",
    "FACES",
    "INFRASTRUCTURE",
    "SERVICES",
    "RestartPolicy",
    "StackConfig",
    "StackPaths",
    "StackPorts",
    "port_env_var",
]

INFRASTRUCTURE: Final = ("seaweedfs", "nats", "clamd")
SERVICES: Final = ("metadata", "upload", "processor", "download")
# HTTP faces in front of the services: the browser face (Connect and gRPC-Web), filestore-edge, and the
# demo page (filestore.stack.demo), which exists only in this embedded stack.
FACES: Final = ("edge", "demo")
# Start order; stop runs it backwards.
ALL_COMPONENTS: Final = (*INFRASTRUCTURE, *SERVICES, *FACES)

# weed mini's embedded maintenance worker dials the admin server at "admin http port + 10000" and
# ignores -admin.port.grpc, so the admin gRPC port cannot be chosen freely: it is derived.
ADMIN_GRPC_OFFSET: Final = 10000

#: Where ``make web`` writes the browser client, relative to the repository (``make run``'s cwd).
DEFAULT_WEB_BUNDLE: Final = "clients/web/dist/filestore-web.js"

_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")
# S3 bucket naming rules (the subset SeaweedFS and AWS agree on).
_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def port_env_var(name: str) -> str:
    """The environment variable that overrides the port called ``name`` (a StackPorts field)."""
    return f"FILESTORE_STACK_{name.upper()}_PORT"


@dataclass(frozen=True, slots=True, kw_only=True)
class StackPorts:
    """Every TCP port the stack listens on. Each default is overridable by ``FILESTORE_STACK_<NAME>_PORT``.

    The defaults keep clear of a system NATS on 4222 and use SeaweedFS's own defaults otherwise
    (its gRPC ports are the http port + 10000, as SeaweedFS itself would pick).
    """

    metadata: int = 50051
    upload: int = 50052
    processor: int = 50053
    download: int = 50054
    # The browser face (HTTP: Connect and gRPC-Web).
    edge: int = 8090
    # The demo page, and the development identity it uses (the local stack only).
    demo: int = 8091
    # Prometheus /metrics of each service (FILESTORE_METRICS_PORT).
    metadata_metrics: int = 9151
    upload_metrics: int = 9152
    processor_metrics: int = 9153
    download_metrics: int = 9154
    nats: int = 4322
    nats_monitor: int = 8322
    s3: int = 8333
    s3_grpc: int = 18333
    filer: int = 8888
    filer_grpc: int = 18888
    master: int = 9333
    master_grpc: int = 19333
    volume: int = 9340
    volume_grpc: int = 19340
    admin: int = 23646
    # Not clamd's own 3310, so a system clamd can run beside the stack.
    clamd: int = 3320

    def metrics_port(self, service: str) -> int:
        """The Prometheus port of one of the four services."""
        if service not in SERVICES:
            raise KeyError(service)
        port: int = getattr(self, f"{service}_metrics")
        return port

    @property
    def admin_grpc(self) -> int:
        """Derived, never configured: see ADMIN_GRPC_OFFSET."""
        return self.admin + ADMIN_GRPC_OFFSET

    def __post_init__(self) -> None:
        for name, port in self.items():
            if not 1 <= port <= 65535:
                raise StackConfigError(f"{_origin(name)}: port {port} is outside 1..65535")
        seen: dict[int, str] = {}
        for name, port in self.items():
            if port in seen:
                raise StackConfigError(
                    f"{_origin(name)} and {_origin(seen[port])} are both {port}; every port must differ"
                )
            seen[port] = name

    def items(self) -> Iterator[tuple[str, int]]:
        """(name, port) for every listening port, including the derived ``admin_grpc``."""
        for f in fields(self):
            yield f.name, getattr(self, f.name)
        yield "admin_grpc", self.admin_grpc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackPorts:
        """Defaults, overridden by ``FILESTORE_STACK_<NAME>_PORT`` variables."""
        env = os.environ if environ is None else environ
        overrides: dict[str, int] = {}
        for f in fields(cls):
            var = port_env_var(f.name)
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                overrides[f.name] = int(raw, 10)
            except ValueError:
                raise StackConfigError(f"{var}={raw!r} is not a port number") from None
        return cls(**overrides)

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> StackPorts:
        """Ports that are free right now, all different: for tests, which must never use fixed ports.

        All candidate sockets stay bound until every port is chosen, so the kernel cannot hand out
        the same port twice; the usual race (someone else binds it before the stack does) remains.
        """
        with contextlib.ExitStack() as held:

            def grab(port: int = 0) -> int | None:
                sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                try:
                    sock.bind((host, port))
                except OSError:
                    return None
                bound: int = sock.getsockname()[1]
                return bound

            chosen: dict[str, int] = {}
            for f in fields(cls):
                if f.name == "admin":
                    continue
                port = grab()
                assert port is not None
                chosen[f.name] = port
            for _ in range(200):
                admin = grab()
                if admin is None or admin + ADMIN_GRPC_OFFSET > 65535:
                    continue
                if grab(admin + ADMIN_GRPC_OFFSET) is not None:
                    chosen["admin"] = admin
                    break
            else:
                raise StackConfigError(f"no free port pair p, p+{ADMIN_GRPC_OFFSET} on {host}")
            return cls(**chosen)


def _origin(name: str) -> str:
    if name == "admin_grpc":
        return f"admin_grpc (= {port_env_var('admin')} + {ADMIN_GRPC_OFFSET})"
    return port_env_var(name)


@dataclass(frozen=True, slots=True)
class StackPaths:
    """Where the stack keeps its state under ``home``. All of it survives a restart."""

    home: Path

    @property
    def stack_json(self) -> Path:
        return self.home / "stack.json"

    @property
    def lock_file(self) -> Path:
        return self.home / "stack.lock"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def secrets(self) -> Path:
        return self.home / "secrets"

    @property
    def s3_credentials(self) -> Path:
        return self.secrets / "s3_credentials.json"

    @property
    def s3_identities(self) -> Path:
        return self.secrets / "s3_identities.json"

    @property
    def auth_secret(self) -> Path:
        return self.secrets / "auth_secret"

    @property
    def upload_session_key(self) -> Path:
        return self.secrets / "upload_session_key"

    @property
    def tls(self) -> Path:
        """The local CA and the certificates of a TLS stack (see :mod:`filestore.stack.tls`)."""
        return self.home / "tls"

    @property
    def seaweedfs(self) -> Path:
        return self.home / "seaweedfs"

    @property
    def nats(self) -> Path:
        return self.home / "nats"

    @property
    def clamd(self) -> Path:
        return self.home / "clamd"

    @property
    def sqlite_db(self) -> Path:
        return self.home / "metadata.db"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """How ``filestore-stack run`` treats a component that exits while the stack runs.

    It is started again after ``first_delay_s``, doubled for each earlier crash of the same component
    within ``window_s`` (up to ``max_delay_s``): 1, 2, 4, 8 s by default. The ``max_crashes``-th crash
    within the window ends the stack instead: a component that dies five times in five minutes is
    broken, not unlucky, and restarting it for ever would hide that behind a stack that looks up. A
    failed restart (the process died or was not ready in time) counts as a crash.
    """

    max_crashes: int = 5
    window_s: float = 300.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_crashes < 1:
            raise StackConfigError("max_crashes must be at least 1")
        if self.window_s <= 0 or self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise StackConfigError("window_s must be positive and 0 <= first_delay_s <= max_delay_s")

    def delay_s(self, crashes: int) -> float:
        """The wait before restarting a component that crashed ``crashes`` times within the window."""
        return float(min(self.first_delay_s * 2 ** max(0, crashes - 1), self.max_delay_s))


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """What to run and where.

    ``components`` selects which processes this stack starts (always in ``ALL_COMPONENTS`` order);
    the endpoints of the others are still computed from ``ports``, which lets a test run, say,
    only the services against fakes. ``extra_env`` adds or overrides environment variables per
    component (``{"upload": {"FILESTORE_UPLOAD_TTL_S": "5"}}``). ``commands`` replaces the argv of
    a service (tests use it to run a fake); by default each service runs its console script.
    ``restart`` is what ``filestore-stack run`` does when a component exits while the stack runs
    (a :class:`Stack` used directly, as in the test fixtures, restarts nothing by itself).
    ``clamd_executable`` is the clamd to run, a name looked up like the other executables or a path;
    when there is none the stack starts without clamd (see :meth:`Stack.start`).
    ``web_bundle`` is the browser client the demo page loads (``make web`` builds it); it is read at
    every request, so it may appear or change while the stack runs. None: the page says it is missing.
    ``tls`` puts every service, NATS, S3 and the browser face on TLS with certificates from a local CA
    (mutual TLS for the services and NATS; see :mod:`filestore.stack.tls`); ``tls_names`` are extra
    host names or addresses the server certificates carry, beside ``host``, 127.0.0.1 and localhost.
    """

    home: Path
    host: str = "127.0.0.1"
    ports: StackPorts = field(default_factory=StackPorts)
    bucket: str = "filestore"
    region: str = "us-east-1"
    database_url: str | None = None
    log_level: str = "info"
    components: tuple[str, ...] = ALL_COMPONENTS
    extra_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    commands: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 12.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    clamd_executable: str = "clamd"
    web_bundle: Path | None = None
    tls: bool = False
    tls_names: tuple[str, ...] = ()
    #: How many regions: 1, or 2 for a second SeaweedFS as a second store (see
    #: :mod:`filestore.stack.regions`).
    regions: int = 1

    def __post_init__(self) -> None:
        # A relative home would silently change meaning for children started with another cwd.
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())
        unknown = [c for c in self.components if c not in ALL_COMPONENTS]
        if unknown:
            raise StackConfigError(
                f"unknown component(s) {', '.join(unknown)}; known: {', '.join(ALL_COMPONENTS)}"
            )
        object.__setattr__(self, "components", tuple(c for c in ALL_COMPONENTS if c in self.components))
        for name in (*self.extra_env, *self.commands):
            if name not in ALL_COMPONENTS:
                raise StackConfigError(f"extra_env/commands name unknown component {name!r}")
        for name in self.commands:
            if name not in SERVICES:
                raise StackConfigError(f"commands can only replace a service, not {name!r}")
            if not self.commands[name]:
                raise StackConfigError(f"commands[{name!r}] is empty")
        if self.log_level not in _LOG_LEVELS:
            raise StackConfigError(f"log level {self.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
        if not _BUCKET_RE.fullmatch(self.bucket):
            raise StackConfigError(f"bucket {self.bucket!r} is not a valid S3 bucket name")
        if not self.host or any(ch.isspace() for ch in self.host):
            raise StackConfigError(f"host {self.host!r} is not a host name or address")
        if self.regions not in (1, 2):
            raise StackConfigError(f"regions must be 1 or 2, not {self.regions}")
        if self.ready_timeout_s <= 0 or self.stop_timeout_s <= 0:
            raise StackConfigError("ready_timeout_s and stop_timeout_s must be positive")

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.home)

    @property
    def resolved_database_url(self) -> str:
        """The metadata database: ``database_url``, or SQLite in the state directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.paths.sqlite_db}"

    def with_ports(self, ports: StackPorts) -> StackConfig:
        return replace(self, ports=ports)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> StackConfig:
        """The configuration of ``filestore-stack run``.

        ``FILESTORE_HOME`` (default ``.filestore`` in ``cwd``), ``FILESTORE_STACK_HOST``,
        ``FILESTORE_STACK_BUCKET``, ``FILESTORE_STACK_COMPONENTS`` (comma separated),
        ``FILESTORE_DATABASE_URL``, ``FILESTORE_LOG_LEVEL``, ``FILESTORE_STACK_CLAMD``,
        ``FILESTORE_STACK_WEB_BUNDLE`` (default ``clients/web/dist/filestore-web.js`` in ``cwd``, where
        ``make web`` writes it), ``FILESTORE_STACK_TLS`` (1/true: TLS everywhere; default off),
        ``FILESTORE_STACK_TLS_NAMES`` (comma separated), ``FILESTORE_STACK_REGIONS`` (1 or 2) and
        ``FILESTORE_STACK_<NAME>_PORT``.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        base = Path.cwd() if cwd is None else cwd
        home = Path(get("FILESTORE_HOME") or ".filestore").expanduser()
        components_raw = env.get("FILESTORE_STACK_COMPONENTS")
        components = (
            ALL_COMPONENTS
            if components_raw is None
            else tuple(c.strip() for c in components_raw.split(",") if c.strip())
        )
        # Checked here as well as in __post_init__ so the message names the variable to fix.
        unknown = [c for c in components if c not in ALL_COMPONENTS]
        if unknown:
            raise StackConfigError(
                f"FILESTORE_STACK_COMPONENTS names unknown component(s) {', '.join(unknown)}; "
                f"known: {', '.join(ALL_COMPONENTS)}"
            )
        log_level = (get("FILESTORE_LOG_LEVEL") or "info").lower()
        if log_level not in _LOG_LEVELS:
            raise StackConfigError(
                f"FILESTORE_LOG_LEVEL={log_level!r} is not one of {', '.join(_LOG_LEVELS)}"
            )
        regions = get("FILESTORE_STACK_REGIONS") or "1"
        if regions not in ("1", "2"):
            raise StackConfigError(f"FILESTORE_STACK_REGIONS={regions!r} must be 1 or 2")
        bucket = get("FILESTORE_STACK_BUCKET") or "filestore"
        if not _BUCKET_RE.fullmatch(bucket):
            raise StackConfigError(f"FILESTORE_STACK_BUCKET={bucket!r} is not a valid S3 bucket name")
        tls_raw = (get("FILESTORE_STACK_TLS") or "0").lower()
        if tls_raw not in _TRUE + _FALSE:
            raise StackConfigError(f"FILESTORE_STACK_TLS={tls_raw!r} is not one of 1, true, 0, false")
        return cls(
            home=home if home.is_absolute() else base / home,
            host=get("FILESTORE_STACK_HOST") or "127.0.0.1",
            ports=StackPorts.from_env(env),
            bucket=bucket,
            database_url=get("FILESTORE_DATABASE_URL"),
            log_level=log_level,
            components=components,
            clamd_executable=get("FILESTORE_STACK_CLAMD") or "clamd",
            web_bundle=base / Path(get("FILESTORE_STACK_WEB_BUNDLE") or DEFAULT_WEB_BUNDLE),
            tls=tls_raw in _TRUE,
            tls_names=tuple(
                n.strip() for n in (get("FILESTORE_STACK_TLS_NAMES") or "").split(",") if n.strip()
            ),
            regions=int(regions),
        )
