"""The embedded stack: SeaweedFS (``weed mini``), NATS with JetStream, ClamAV's clamd and the four services.

Start order is SeaweedFS and NATS, then metadata, then upload, processor and download; each must
be ready (S3 answers an authenticated request, JetStream is healthy, gRPC health says SERVING)
before the next starts. Stop runs backwards in two phases: services first (so they can drain to
NATS and S3), then the infrastructure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from filestore.stack.config import (
    ADMIN_GRPC_OFFSET,
    FACES,
    INFRASTRUCTURE,
    SERVICES,
    StackConfig,
    port_env_var,
)
from filestore.stack.credentials import StackCredentials, load_or_create_credentials, write_private_file
from filestore.stack.endpoints import StackEndpoints, StackInfo, check_health
from filestore.stack.errors import StackConfigError, StackError, StackPortInUseError, StackStartError
from filestore.stack.probes import probe_clamd, probe_grpc_health, probe_http_health, probe_nats, probe_s3
from filestore.stack.process import ManagedProcess, exit_description, find_executable, tail
from filestore.stack.regions import SEAWEEDFS_STORAGE_CLASSES, region_stack_configs, stores_env
from filestore.stack.tls import StackTls, ensure_stack_tls, nats_tls_config, tls_env_for, weed_s3_tls_args

__all__ = ["Stack"]

log = logging.getLogger("filestore.stack")

# Which StackPorts fields each component listens on ("admin_grpc" is derived from "admin").
_COMPONENT_PORTS: Final[dict[str, tuple[str, ...]]] = {
    "seaweedfs": (
        "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
        "s3", "s3_grpc", "admin", "admin_grpc",
    ),
    "nats": ("nats", "nats_monitor"),
    "clamd": ("clamd",),
    **{service: (service, f"{service}_metrics") for service in SERVICES},
    "edge": ("edge",),
    "demo": ("demo",),
}  # fmt: skip
_WEED_GRPC_PORTS: Final = ("master_grpc", "volume_grpc", "filer_grpc", "s3_grpc", "admin_grpc")
# Unix socket paths are limited to 108 bytes; a deep FILESTORE_HOME falls back to a short path.
_MAX_SOCKET_PATH: Final = 100
_PROBE_INTERVAL_S: Final = 0.2
_LOG_TAIL_LINES: Final = 30
_TEST_SIGNATURES: Final = "filestore-test.ndb"
_SYSTEM_CLAMAV_DB: Final = Path("/var/lib/clamav")
_CLAMAV_DB_SUFFIXES: Final = frozenset({".cvd", ".cld", ".cud"})
# The processor's FILESTORE_CLAMD_ADDR for "this deployment has no scanner" (its NO_SCANNER).
_NO_SCANNER: Final = "none"
_UNSCANNED: Final = (
    "their scan step ends SKIPPED TOOL_MISSING and they become READY "
    "(ReprocessFile scans them once clamd runs)"
)
# The tools the processor runs when it finds them on its PATH (without one, the step it serves ends
# SKIPPED TOOL_MISSING): tool -> (Debian packages, what goes missing without it).
_PROCESSOR_TOOLS: Final = {
    "tesseract": ("tesseract-ocr tesseract-ocr-eng", "no OCR: the ocr step ends SKIPPED TOOL_MISSING"),
    "ffmpeg": ("ffmpeg", "no video thumbnails: their thumbnail step ends SKIPPED TOOL_MISSING"),
}


class Stack:
    """Runs the stack as child processes: ``async with Stack(config) as stack: ...``."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.paths = config.paths
        self._processes: dict[str, ManagedProcess] = {}
        self._credentials: StackCredentials | None = None
        self._tls: StackTls | None = None
        self._lock_fd: int | None = None
        self._components: tuple[str, ...] = config.components
        # Regions beyond the first (FILESTORE_STACK_REGIONS; see filestore.stack.regions).
        self.regions: list[Stack] = [Stack(each) for each in region_stack_configs(config)]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------------------- inspection

    @property
    def endpoints(self) -> StackEndpoints:
        """Addresses and secrets; available once :meth:`start` has begun."""
        if self._credentials is None:
            raise StackError("the stack has not been started")
        return StackEndpoints.from_config(self.config, self._credentials)

    @property
    def components(self) -> tuple[str, ...]:
        """The components this stack runs: the configured ones, less clamd when :meth:`start` found
        none to run."""
        return self._components

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the components that are running now."""
        return {
            name: proc.pid for name, proc in self._processes.items() if proc.running and proc.pid is not None
        }

    def process(self, component: str) -> ManagedProcess:
        try:
            return self._processes[component]
        except KeyError:
            raise StackError(f"{component} is not a component this stack has started") from None

    def log_path(self, component: str) -> Path:
        return self.paths.log(component)

    def info(self) -> StackInfo:
        return StackInfo(
            home=self.paths.home,
            endpoints=self.endpoints,
            components=self.components,
            pids=self.pids,
            s3_credentials_file=self.paths.s3_credentials,
            auth_secret_file=self.paths.auth_secret,
            logs_dir=self.paths.logs,
        )

    def write_stack_json(self, path: Path | None = None) -> Path:
        """Describe the running stack for other processes (see :mod:`filestore.stack.endpoints`)."""
        return self.info().write(path or self.paths.stack_json)

    async def health(self) -> dict[str, tuple[bool, str]]:
        """Probe every configured component once: {component: (healthy, detail)}."""
        return await check_health(self.endpoints, self.components)

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> StackEndpoints:
        """Start every configured component in order, each ready before the next.

        Raises :class:`StackPortInUseError` before anything starts when a port is taken, and
        :class:`StackStartError` (with the tail of the culprit's log) when a component dies or is
        not ready in time; whatever had started is stopped again before the error propagates.

        What the machine lacks does not stop it (the first ``make run`` on a machine where the Debian
        packages could not be installed must still bring the stack up): without clamd the stack
        runs without it and the processor without a scanner, so files become READY unscanned (their
        scan step SKIPPED ``TOOL_MISSING``); without tesseract or ffmpeg the steps they serve are
        SKIPPED. One warning line says each, and what it means for files.
        """
        if self._lock_fd is not None:
            raise StackError("the stack is already started")
        self.paths.home.mkdir(parents=True, exist_ok=True)
        self._acquire_home_lock()
        try:
            self._components = self._runnable_components()
            self._check_ports_free(self.components)
            self._credentials = load_or_create_credentials(self.paths, bucket=self.config.bucket)
            if self.config.tls:
                self._tls = ensure_stack_tls(self.paths.tls, hosts=(self.config.host, *self.config.tls_names))
            self.paths.logs.mkdir(parents=True, exist_ok=True)
            for region in self.regions:
                await region.start()
            self._say_what_is_missing()
            await self._start_all()
        except BaseException:
            # Includes cancellation (Ctrl-C during start-up): never leave half a stack running.
            await self.stop()
            raise
        log.info("stack ready: %s", ", ".join(self.components))
        return self.endpoints

    async def stop(self) -> None:
        """Stop everything within ``config.stop_timeout_s``: SIGTERM in reverse order, then SIGKILL."""
        budget = self.config.stop_timeout_s
        try:
            for group, share in self._stop_plan():
                await self._stop_group(group, budget * share)
            for region in self.regions:
                await region.stop()
        finally:
            self._release_home_lock()

    async def _start_all(self) -> None:
        """Start every component, each ready before the next (the cluster profile starts waves)."""
        for component in self.components:
            await self._start_component(component)

    def _stop_plan(self) -> list[tuple[list[str], float]]:
        """Groups of components to stop one after the other, each with its share of the stop budget."""
        # Services get half the budget, so infrastructure always keeps time for a clean stop.
        return [
            (list(reversed(FACES)), 1 / 4),
            (list(reversed(SERVICES)), 1 / 4),
            (list(reversed(INFRASTRUCTURE)), 1 / 2),
        ]

    async def kill(self, component: str) -> None:
        """SIGKILL one component (its whole process group), as a crash would. For fault injection."""
        proc = self.process(component)
        await proc.kill()
        if component == "seaweedfs":
            self._remove_weed_grpc_sockets()
        log.info("killed %s", component)

    async def terminate(self, component: str) -> None:
        """Stop one component gracefully (SIGTERM, SIGKILL after the stop budget)."""
        await self.process(component).stop(self.config.stop_timeout_s / 2)

    async def restart(self, component: str) -> None:
        """Start ``component`` again on the same ports (stopping it first if it still runs)."""
        if self._credentials is None:
            raise StackError("the stack has not been started")
        if component not in self.components:
            raise StackError(f"{component} is not a component of this stack")
        proc = self._processes.get(component)
        if proc is not None and proc.running:
            await proc.stop(self.config.stop_timeout_s / 2)
        await self._wait_ports_free(component, within_s=5.0)
        try:
            await self._start_component(component)
        except BaseException:
            if (failed := self._processes.get(component)) is not None:
                await failed.kill()
            raise

    # ------------------------------------------------------------------------------- internals

    def _runnable_components(self) -> tuple[str, ...]:
        """The configured components, less clamd when there is none to run."""
        components = self.config.components
        if "clamd" in components and find_executable(self.config.clamd_executable) is None:
            return tuple(c for c in components if c != "clamd")
        return components

    def _say_what_is_missing(self) -> None:
        """One warning line for each thing this machine lacks, and what it means for files."""
        if "clamd" in self.config.components and "clamd" not in self.components:
            log.warning(
                "%s not found (install Debian clamav-daemon, or set FILESTORE_STACK_CLAMD): starting "
                "without it, so files are NOT virus-scanned: %s",
                self.config.clamd_executable,
                _UNSCANNED,
            )
        elif "processor" in self.components and "clamd" not in self.components:
            log.warning(
                "clamd is not a component of this stack, so files are NOT virus-scanned: %s", _UNSCANNED
            )
        if "clamd" in self.components and not self._has_a_signature_database():
            log.warning(
                "clamd knows only the test signatures shipped with the stack (EICAR), no real malware: "
                "add a ClamAV database with freshclam, or copy main.cvd and daily.cvd into %s (README: "
                "The signature database)",
                self._clamd_database,
            )
        bundle = self.config.web_bundle
        if "demo" in self.components and (bundle is None or not bundle.is_file()):
            log.warning(
                "the browser client %s is not built (run `make web`): the demo page says so until it is",
                bundle or "(FILESTORE_STACK_WEB_BUNDLE unset)",
            )
        if "processor" not in self.components:
            return
        env = self._service_env("processor")
        env.update(self.config.extra_env.get("processor", {}))
        search_path = env.get("PATH", os.defpath)
        for tool, (packages, consequence) in _PROCESSOR_TOOLS.items():
            if shutil.which(tool, path=search_path) is None:
                log.warning("%s not found (install Debian %s): %s", tool, packages, consequence)

    async def _stop_group(self, components: Iterable[str], grace_s: float) -> None:
        procs = [p for c in components if (p := self._processes.get(c)) is not None and p.running]
        if not procs:
            return
        # The coroutines signal in list order (reverse start order) before any of them waits.
        await asyncio.gather(*(p.stop(grace_s) for p in procs))
        for proc in procs:
            log.info("stopped %s (exit %s)", proc.name, proc.returncode)
            if proc.name == "seaweedfs":
                self._remove_weed_grpc_sockets()

    async def _start_component(self, component: str) -> None:
        proc = self._build_process(component)
        if component == "seaweedfs":
            self._remove_weed_grpc_sockets()
        self._processes[component] = proc
        started = time.monotonic()
        proc.start()
        await self._wait_ready(proc, self._readiness_probe(component))
        log.info("%s ready in %.1fs (pid %s)", component, time.monotonic() - started, proc.pid)

    def _readiness_probe(self, component: str) -> Callable[[], Awaitable[tuple[bool, str]]]:
        endpoints = self.endpoints
        if component == "seaweedfs":
            return lambda: probe_s3(
                endpoints.s3_endpoint,
                region=endpoints.s3_region,
                bucket=endpoints.bucket,
                access_key=endpoints.s3_access_key,
                secret_key=endpoints.s3_secret_key,
                master_url=endpoints.master_url,
                tls=endpoints.tls,
            )
        if component == "nats":
            return lambda: probe_nats(endpoints.nats_monitor_url, tls=endpoints.tls)
        if component == "clamd":
            return lambda: probe_clamd(endpoints.clamd_addr)
        if component == "edge":
            return lambda: probe_http_health(endpoints.edge_url, tls=endpoints.tls)
        if component == "demo":
            return lambda: probe_http_health(endpoints.demo_url.rstrip("/"))
        address = endpoints.service_addr(component)
        return lambda: probe_grpc_health(address, tls=endpoints.tls)

    async def _wait_ready(
        self, proc: ManagedProcess, probe: Callable[[], Awaitable[tuple[bool, str]]]
    ) -> None:
        timeout = self.config.ready_timeout_s
        deadline = time.monotonic() + timeout
        detail = "no probe answered yet"
        while True:
            if (code := proc.returncode) is not None:
                await proc.wait()
                cause = f"{exit_description(code)} during start-up"
                raise StackStartError(
                    proc.name,
                    f"{proc.name} {cause}; last lines of "
                    f"{proc.log_path}:\n{tail(proc.log_path, _LOG_TAIL_LINES)}",
                    cause=cause,
                )
            ok, detail = await probe()
            if ok:
                return
            if time.monotonic() >= deadline:
                await proc.stop(self.config.stop_timeout_s / 2)
                cause = f"was not ready after {timeout:g}s ({detail})"
                raise StackStartError(
                    proc.name,
                    f"{proc.name} {cause}; last lines of "
                    f"{proc.log_path}:\n{tail(proc.log_path, _LOG_TAIL_LINES)}",
                    cause=cause,
                )
            await asyncio.sleep(_PROBE_INTERVAL_S)

    def _build_process(self, component: str) -> ManagedProcess:
        if component == "seaweedfs":
            argv, env, cwd = self._weed_command(), dict(os.environ), self.paths.seaweedfs
        elif component == "nats":
            argv, env, cwd = self._nats_command(), dict(os.environ), self.paths.nats
        elif component == "clamd":
            argv, env, cwd = self._clamd_command(), dict(os.environ), self.paths.clamd
        elif component == "edge":
            argv, env, cwd = [_require_executable("filestore-edge")], self._edge_env(), self.paths.home
        elif component == "demo":
            argv, env, cwd = [sys.executable, "-m", "filestore.stack.demo"], self._demo_env(), self.paths.home
        else:
            argv = list(
                self.config.commands.get(component) or [_require_executable(f"filestore-{component}")]
            )
            env, cwd = self._service_env(component), self.paths.home
        env.update(self.config.extra_env.get(component, {}))
        if component in ("upload", "edge") and "demo" in self.components:
            env["FILESTORE_CORS_ORIGINS"] = _with_origin(
                env.get("FILESTORE_CORS_ORIGINS", ""), self._demo_origin
            )
        cwd.mkdir(parents=True, exist_ok=True)
        return ManagedProcess(component, argv, log_path=self.paths.log(component), env=env, cwd=cwd)

    def _weed_command(self) -> list[str]:
        ports, host = self.config.ports, self.config.host
        sockets = self._socket_dir()
        glog_dir = self.paths.logs / "seaweedfs"
        glog_dir.mkdir(parents=True, exist_ok=True)
        return [
            _require_executable("weed"),
            f"-config_dir={self._write_weed_security()}",
            # Everything to stderr, which lands in logs/seaweedfs.log; -logdir keeps any file glog
            # still writes inside the state directory instead of /tmp.
            "-logtostderr=true",
            f"-logdir={glog_dir}",
            "mini",
            f"-dir={self.paths.seaweedfs}",
            f"-ip={host}",
            f"-ip.bind={host}",
            "-master.telemetry=false",
            f"-master.port={ports.master}",
            f"-master.port.grpc={ports.master_grpc}",
            f"-volume.port={ports.volume}",
            f"-volume.port.grpc={ports.volume_grpc}",
            # Single node: nobody needs the grace period to move traffic elsewhere; stops faster.
            "-volume.preStopSeconds=0",
            f"-filer.port={ports.filer}",
            f"-filer.port.grpc={ports.filer_grpc}",
            f"-filer.localSocket={sockets / 'filer.sock'}",
            f"-s3.port={ports.s3}",
            f"-s3.port.grpc={ports.s3_grpc}",
            f"-s3.localSocket={sockets / 's3.sock'}",
            f"-s3.config={self.paths.s3_identities}",
            # Iceberg and Lance catalogues would listen on fixed ports (8181, 9101); 0 disables them.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-admin.port={ports.admin}",
            f"-admin.port.grpc={ports.admin_grpc}",
            "-webdav=false",
            f"-bucket={self.config.bucket}",
            *(weed_s3_tls_args(self._tls) if self._tls is not None else ()),
        ]

    def _write_weed_security(self) -> Path:
        """Make the filer's and volume server's HTTP APIs demand JWTs that only SeaweedFS can mint.

        Without it, anyone on the host could read and write every object through the filer port,
        bypassing S3 credentials. The S3 gateway, the filer gRPC API (used by the event bridge) and
        presigned URLs are unaffected. Tokens live seconds, so fresh keys at every start cost nothing.
        """
        config_dir = self.paths.seaweedfs / "config"
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sections = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
        toml = "# Written by filestore-stack at every start, with fresh keys; edits are lost.\n" + "".join(
            f'[{section}]\nkey = "{secrets.token_urlsafe(32)}"\nexpires_after_seconds = 30\n\n'
            for section in sections
        )
        write_private_file(config_dir / "security.toml", toml)
        return config_dir

    def _nats_command(self) -> list[str]:
        ports, host = self.config.ports, self.config.host
        # A config file, because the command line cannot bind the monitor to a host explicitly.
        conf = self.paths.nats / "nats-server.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        # With TLS, the monitor is served over HTTPS ("https:") with the same certificate.
        monitor = "https" if self._tls is not None else "http"
        conf.write_text(
            "# Written by filestore-stack at every start; edits are lost.\n"
            f"server_name: {json.dumps('filestore-stack')}\n"
            f"host: {json.dumps(host)}\n"
            f"port: {ports.nats}\n"
            f"{monitor}: {json.dumps(f'{host}:{ports.nats_monitor}')}\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(self.paths.nats / 'jetstream'))}\n}}\n"
            + (nats_tls_config(self._tls) if self._tls is not None else ""),
            encoding="utf-8",
        )
        return [_require_executable("nats-server"), "--config", str(conf)]

    @property
    def _clamd_database(self) -> Path:
        return self.paths.clamd / "db"

    def _has_a_signature_database(self) -> bool:
        """The host's database, or signature files copied into ours (the links to the host's are
        made anew at every start; anything else there is the user's)."""
        if _system_signature_files():
            return True
        if not self._clamd_database.is_dir():
            return False
        return any(
            entry.name != _TEST_SIGNATURES and not entry.is_symlink()
            for entry in self._clamd_database.iterdir()
        )

    def _clamd_command(self) -> list[str]:
        """clamd in the foreground on its own TCP port, with the shipped test signatures (EICAR) and,
        when the host has one, the system's signature database (no download is attempted). Signature
        files copied into the database directory are the user's: kept, and preferred to the host's."""
        root = self.paths.clamd
        database = self._clamd_database
        scratch = root / "tmp"
        for directory in (database, scratch):
            directory.mkdir(parents=True, exist_ok=True)
        signatures = resources.files("filestore.stack") / "clamav" / _TEST_SIGNATURES
        (database / _TEST_SIGNATURES).write_bytes(signatures.read_bytes())
        # clamd reads one directory: link the system database into ours rather than copying it.
        for entry in database.iterdir():
            if entry.is_symlink():
                entry.unlink()
        for source in _system_signature_files():
            if not (database / source.name).exists():
                (database / source.name).symlink_to(source)
        conf = root / "clamd.conf"
        conf.write_text(
            "# Written by filestore-stack at every start; edits are lost.\n"
            "Foreground yes\n"
            f"TCPAddr {self.config.host}\n"
            f"TCPSocket {self.config.ports.clamd}\n"
            f"DatabaseDirectory {database}\n"
            f"TemporaryDirectory {scratch}\n"
            "LogTime yes\n"
            # The processor streams whole objects (uploads go up to 5 GiB); INSTREAM tops out below 4 GiB,
            # and objects above the scan limits would otherwise pass unscanned.
            "StreamMaxLength 4000M\n"
            "MaxScanSize 4000M\n"
            "MaxFileSize 4000M\n"
            "AlertExceedsMax yes\n"
            # The default 2 minutes is too short for a 2 GiB object on a busy machine.
            "MaxScanTime 900000\n"
            "MaxThreads 8\n"
            "SelfCheck 3600\n",
            encoding="utf-8",
        )
        return [_require_executable(self.config.clamd_executable), f"--config-file={conf}"]

    def _service_env(self, service: str) -> dict[str, str]:
        endpoints = self.endpoints
        env = dict(os.environ)
        env.update(
            PYTHONUNBUFFERED="1",  # logs reach the file as they happen, and survive a SIGKILL
            FILESTORE_LISTEN=endpoints.service_addr(service),
            FILESTORE_LOG_LEVEL=self.config.log_level,
            FILESTORE_AUTH_SECRET=endpoints.auth_secret,
            FILESTORE_METRICS_PORT=str(self.config.ports.metrics_port(service)),
        )
        # Every service talks to storage with an identity of its own, limited to what it does
        # (SERVICE_S3_ACTIONS); metadata only deletes objects no file needs any more.
        access_key, secret_key = endpoints.credentials.service_s3_keys[service]
        env.update(
            FILESTORE_S3_ENDPOINT=endpoints.s3_endpoint,
            FILESTORE_S3_ACCESS_KEY=access_key,
            FILESTORE_S3_SECRET_KEY=secret_key,
            FILESTORE_S3_BUCKET=endpoints.bucket,
            FILESTORE_S3_REGION=endpoints.s3_region,
            FILESTORE_S3_STORAGE_CLASSES=",".join(SEAWEEDFS_STORAGE_CLASSES),
        )
        if self._tls is not None:
            env.update(tls_env_for(service, self._tls))
        env.update(stores_env(self.regions, service))
        if service == "metadata":
            env["FILESTORE_DATABASE_URL"] = endpoints.database_url
            return env
        env.update(
            FILESTORE_METADATA_ADDR=endpoints.metadata_addr,
            FILESTORE_NATS_URL=endpoints.nats_url,
        )
        if service == "upload":
            env["FILESTORE_UPLOAD_SESSION_KEY"] = endpoints.credentials.upload_session_key
        if service == "processor":
            env["FILESTORE_FILER_GRPC"] = endpoints.filer_grpc
            env["FILESTORE_CLAMD_ADDR"] = endpoints.clamd_addr if "clamd" in self.components else _NO_SCANNER
        return env

    def _edge_env(self) -> dict[str, str]:
        """The browser face forwards to the services; it holds no secret (callers bring their
        tokens). Its allowed origins, FILESTORE_CORS_ORIGINS, come from the stack's environment, as
        the broker's do, so that the page's origin is allowed by both the face and the bucket."""
        endpoints = self.endpoints
        env = dict(os.environ)
        env.update(
            PYTHONUNBUFFERED="1",
            FILESTORE_LISTEN=f"{self.config.host}:{self.config.ports.edge}",
            FILESTORE_LOG_LEVEL=self.config.log_level,
            FILESTORE_UPLOAD_ADDR=endpoints.upload_addr,
            FILESTORE_METADATA_ADDR=endpoints.metadata_addr,
            FILESTORE_DOWNLOAD_ADDR=endpoints.download_addr,
            FILESTORE_PROCESSOR_ADDR=endpoints.processor_addr,
        )
        if self._tls is not None:
            env.update(tls_env_for("edge", self._tls))
        return env

    @property
    def _demo_origin(self) -> str:
        return f"http://{self.config.host}:{self.config.ports.demo}"

    def _demo_env(self) -> dict[str, str]:
        """The demo page's server mints the development user's tokens, so it holds the token secret
        (as every service of the stack does); see :mod:`filestore.stack.demo`."""
        endpoints = self.endpoints
        env = dict(os.environ)
        env.update(
            PYTHONUNBUFFERED="1",
            FILESTORE_LISTEN=f"{self.config.host}:{self.config.ports.demo}",
            FILESTORE_AUTH_SECRET=endpoints.auth_secret,
            FILESTORE_EDGE_URL=endpoints.edge_url,
            FILESTORE_DEMO_WEB_BUNDLE=str(self.config.web_bundle or ""),
        )
        return env

    def _socket_dir(self) -> Path:
        preferred = self.paths.home / "run"
        if len(str(preferred / "filer.sock")) <= _MAX_SOCKET_PATH:
            preferred.mkdir(mode=0o700, parents=True, exist_ok=True)
            return preferred
        digest = hashlib.sha256(str(self.paths.home).encode()).hexdigest()[:16]
        short = Path(tempfile.gettempdir()) / f"filestore-{digest}"
        short.mkdir(mode=0o700, parents=True, exist_ok=True)
        return short

    def _remove_weed_grpc_sockets(self) -> None:
        # weed puts a unix socket per gRPC server in /tmp, named after the port, and a SIGKILL leaves
        # them behind. Only called while our weed is not running and its ports are ours, so a file
        # with our port number cannot belong to a live server.
        ports = self.config.ports
        tmp = Path(tempfile.gettempdir())
        for name in _WEED_GRPC_PORTS:
            port = getattr(ports, name)
            for sock in tmp.glob(f"seaweedfs-*-grpc-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()

    def _port_conflicts(self, components: Iterable[str]) -> StackPortInUseError | None:
        host, ports = self.config.host, self.config.ports
        for component in components:
            for name in _COMPONENT_PORTS[component]:
                port = ports.admin_grpc if name == "admin_grpc" else getattr(ports, name)
                if not _port_is_free(host, port):
                    env_var = port_env_var("admin" if name == "admin_grpc" else name)
                    label = f"admin_grpc = admin + {ADMIN_GRPC_OFFSET}" if name == "admin_grpc" else name
                    return StackPortInUseError(port=port, name=label, host=host, env_var=env_var)
        return None

    def _check_ports_free(self, components: Iterable[str]) -> None:
        if (conflict := self._port_conflicts(components)) is not None:
            raise conflict

    async def _wait_ports_free(self, component: str, *, within_s: float) -> None:
        # A just-killed process's listening sockets close with it, but give the kernel a moment.
        deadline = time.monotonic() + within_s
        while (conflict := self._port_conflicts([component])) is not None:
            if time.monotonic() >= deadline:
                raise conflict
            await asyncio.sleep(0.1)

    def _acquire_home_lock(self) -> None:
        fd = os.open(self.paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StackConfigError(
                    f"{self.paths.home} is already used by another running stack (pid {holder}); "
                    "set FILESTORE_HOME to another directory"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_home_lock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _with_origin(origins: str, origin: str) -> str:
    """``FILESTORE_CORS_ORIGINS`` (comma separated) with ``origin`` added when it is not there yet:
    the demo page's origin is allowed by the face and the bucket beside the user's own."""
    listed = [o.strip() for o in origins.split(",") if o.strip()]
    return ",".join(listed if origin in listed else [*listed, origin])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the servers themselves, ignore TIME_WAIT leftovers; only a live listener conflicts.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _system_signature_files() -> list[Path]:
    """The host's ClamAV database (what freshclam or the clamav-data package keeps up to date)."""
    if not _SYSTEM_CLAMAV_DB.is_dir():
        return []
    return [source for source in _SYSTEM_CLAMAV_DB.iterdir() if source.suffix in _CLAMAV_DB_SUFFIXES]


def _require_executable(name: str) -> str:
    path = find_executable(name)
    if path is None:
        raise StackConfigError(f"cannot find the {name} executable next to the Python interpreter or on PATH")
    return path
