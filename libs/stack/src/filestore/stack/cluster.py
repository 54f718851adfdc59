"""The cluster profile of the local stack: the production shape, every role its own processes.

``filestore-stack run --profile cluster`` (or :class:`ClusterStack` in a test) starts, on one machine:

- NATS: ``nats_nodes`` (3) ``nats-server`` processes in one JetStream cluster; the services create the
  ``FILES`` stream and the bridge's key-value buckets with 3 replicas (``FILESTORE_NATS_REPLICAS``) and
  know every server (``FILESTORE_NATS_URL`` lists them);
- SeaweedFS in its roles, from the same ``weed``: a ``master`` (default replication ``001``: every
  volume has a copy on a second volume server), ``volume_servers`` (2) volume servers, a ``filer`` and the
  ``s3`` gateway (the stack's credentials, the bucket created at start);
- ``replicas`` (2) of each service, ``metadata-0``, ``metadata-1``, ``upload-0``... each on its own ports;
  the processors share the durable consumers and each runs a storage-event bridge, so two bridges
  contend for the lease; callers reach the replicas through a comma list of addresses, balanced
  round_robin by gRPC (:func:`filestore.core.channels.channel_target`);
- clamd, the browser face and the demo page once each, as in the single-node stack.

The catalogue is PostgreSQL (``database_url``, ``FILESTORE_DATABASE_URL``): this runner does not start
it. Replicas of metadata on one SQLite file would contend for its lock; the profile refuses SQLite.

Start runs in waves, each ready before the next: NATS, the master and clamd; the volume servers; the
filer; S3 (and the bucket); the first metadata replica (it migrates the catalogue); the other replicas
of every service; the faces; then the stream must have a leader and every replica current. Every
process is a component of its own for :meth:`kill`, :meth:`restart` and the supervisor
(``nats-2``, ``volume-1``, ``metadata-1``, ``processor-0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import nats
from nats.aio.client import Client as NatsClient

from filestore.stack.config import SERVICES, StackConfig, StackPorts
from filestore.stack.endpoints import ProcessEndpoint, StackEndpoints, StackInfo, probe_process
from filestore.stack.errors import StackConfigError, StackError, StackPortInUseError, StackStartError
from filestore.stack.probes import probe_s3
from filestore.stack.process import ManagedProcess
from filestore.stack.stack import Stack, _port_is_free, _require_executable, _with_origin
from filestore.stack.tls import nats_route_tls_config, nats_tls_config, weed_s3_tls_args

__all__ = ["CLUSTER_PROFILE", "ClusterPorts", "ClusterShape", "ClusterStack"]

CLUSTER_PROFILE: Final = "cluster"
#: The default SeaweedFS replication: one more copy on another volume server of the same rack.
DEFAULT_REPLICATION: Final = "001"
#: JetStream keeps this many copies of the stream and buckets (at most the number of servers).
_NATS_REPLICAS: Final = 3
_NATS_CLUSTER_NAME: Final = "filestore"
_STREAM: Final = "FILES"
_LEASE_BUCKET: Final = "filestore-bridge-lease"
_NATS_CALL_TIMEOUT_S: Final = 2.0
#: The processes that live once whatever the replica counts, by the StackConfig component that selects
#: them; "seaweedfs" stands for SeaweedFS's roles, the services for their replicas.
_WEED_ROLES: Final = ("master", "volume", "filer", "s3")
_MAX_REPLICAS: Final = 9
_PROBE_INTERVAL_S: Final = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterShape:
    """How many of each: ``replicas`` of every service, ``nats_nodes`` NATS servers, ``volume_servers``
    SeaweedFS volume servers (``replication`` is the master's default placement, ``001`` for one extra
    copy on another server of the same rack)."""

    replicas: int = 2
    nats_nodes: int = 3
    volume_servers: int = 2
    replication: str = DEFAULT_REPLICATION

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= _MAX_REPLICAS:
            raise StackConfigError(f"replicas must be 1..{_MAX_REPLICAS}, not {self.replicas}")
        if self.nats_nodes not in (1, 3, 5):
            raise StackConfigError(f"a NATS cluster has 1, 3 or 5 servers, not {self.nats_nodes}")
        if not 1 <= self.volume_servers <= _MAX_REPLICAS:
            raise StackConfigError(f"volume_servers must be 1..{_MAX_REPLICAS}, not {self.volume_servers}")
        if len(self.replication) != 3 or not self.replication.isdigit():
            raise StackConfigError(f"replication {self.replication!r} is not a SeaweedFS placement like 001")
        copies = 1 + int(self.replication[2])
        if copies > self.volume_servers:
            raise StackConfigError(
                f"replication {self.replication} needs {copies} volume servers, the shape has "
                f"{self.volume_servers}"
            )

    @property
    def nats_replicas(self) -> int:
        return min(_NATS_REPLICAS, self.nats_nodes)


@dataclass(frozen=True, slots=True)
class ClusterPorts:
    """Every port of the cluster: ``base`` holds the singletons' and the first replica's of each kind
    (its field names: ``metadata``, ``metadata_metrics``, ``nats``, ``volume``...), ``extra`` the others as
    ``"<kind>-<index>"`` (``metadata-1``, ``nats_monitor-2``) and the NATS route ports (``nats_cluster-0``).
    """

    base: StackPorts
    extra: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[int, str] = {port: name for name, port in self.base.items()}
        for name, port in self.extra.items():
            if not 1 <= port <= 65535:
                raise StackConfigError(f"cluster port {name} = {port} is outside 1..65535")
            if port in seen:
                raise StackConfigError(f"cluster ports {name} and {seen[port]} are both {port}")
            seen[port] = name

    def port(self, kind: str, index: int = 0) -> int:
        if kind != "nats_cluster" and index == 0:
            value: int = getattr(self.base, kind)
            return value
        try:
            return self.extra[f"{kind}-{index}"]
        except KeyError:
            raise StackConfigError(f"the cluster has no port {kind}-{index}") from None

    @staticmethod
    def _extra_kinds(shape: ClusterShape) -> Iterator[tuple[str, int]]:
        for index in range(1, shape.replicas):
            for service in SERVICES:
                yield service, index
                yield f"{service}_metrics", index
        for index in range(shape.nats_nodes):
            yield "nats_cluster", index
            if index:
                yield "nats", index
                yield "nats_monitor", index
        for index in range(1, shape.volume_servers):
            yield "volume", index
            yield "volume_grpc", index

    @classmethod
    def default(cls, shape: ClusterShape, base: StackPorts | None = None) -> ClusterPorts:
        """A fixed layout for ``filestore-stack run``: the single-node defaults for the first of each,
        then service replica ``i`` at its first's port + 10·i (50061, 9161...), NATS server ``i`` at
        4322 + i (monitor 8322 + i, routes 6322 + i), volume server ``i`` at 9340 + i (gRPC 19340 + i)."""
        base = base or StackPorts()
        steps = {"nats_cluster": 1, "nats": 1, "nats_monitor": 1, "volume": 1, "volume_grpc": 1}
        extra = {}
        for kind, index in cls._extra_kinds(shape):
            if kind == "nats_cluster":
                extra[f"{kind}-{index}"] = 6322 + index
            else:
                extra[f"{kind}-{index}"] = getattr(base, kind) + steps.get(kind, 10) * index
        return cls(base, extra)

    @classmethod
    def free(cls, shape: ClusterShape, host: str = "127.0.0.1") -> ClusterPorts:
        """Ports free right now, all different: for tests (see :meth:`StackPorts.free`)."""
        base = StackPorts.free(host)
        taken = {port for _, port in base.items()}
        extra: dict[str, int] = {}
        with contextlib.ExitStack() as held:
            for kind, index in cls._extra_kinds(shape):
                while True:
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((host, 0))
                    port: int = sock.getsockname()[1]
                    if port not in taken:
                        break
                taken.add(port)
                extra[f"{kind}-{index}"] = port
        return cls(base, extra)


@dataclass(frozen=True, slots=True)
class _Process:
    """One process of the cluster: its name (``metadata-1``), role (``metadata``) and index (1)."""

    name: str
    role: str
    index: int = 0


class ClusterStack(Stack):
    """The cluster profile: ``async with ClusterStack(config, shape=..., ports=...) as cluster: ...``.

    ``config`` is the single-node configuration (home, host, bucket, database_url, components,
    extra_env, timeouts); its ``components`` select roles (``seaweedfs`` stands for all of SeaweedFS's,
    a service for all its replicas) and its ``extra_env`` applies to every replica of a service. Its
    ``ports`` are not used: ``ports`` (default :meth:`ClusterPorts.default`) are.
    """

    profile = CLUSTER_PROFILE

    def __init__(
        self, config: StackConfig, *, shape: ClusterShape | None = None, ports: ClusterPorts | None = None
    ) -> None:
        self.shape = shape or ClusterShape()
        self.cluster_ports = ports or ClusterPorts.default(self.shape, config.ports)
        url = config.database_url or ""
        if not url.startswith("postgresql"):
            raise StackConfigError(
                "the cluster profile keeps its catalogue in PostgreSQL, which it does not start: set "
                "FILESTORE_DATABASE_URL=postgresql+asyncpg://user@host:5432/database"
            )
        # The single-node parts this class reuses (clamd, the faces, the services' environment) read
        # config.ports: they see the singletons' and the first replicas' ports.
        super().__init__(replace(config, ports=self.cluster_ports.base))
        self._layout = self._plan()
        self._components = tuple(self._layout)
        self._weed_config_dir: Path | None = None

    # ----------------------------------------------------------------------------- the plan

    def _plan(self) -> dict[str, _Process]:
        """Every process the configured components stand for, in start order."""
        shape, chosen = self.shape, self.config.components
        processes: list[_Process] = []
        if "nats" in chosen:
            processes += [_Process(f"nats-{i}", "nats", i) for i in range(shape.nats_nodes)]
        if "seaweedfs" in chosen:
            processes.append(_Process("master", "master"))
            processes += [_Process(f"volume-{i}", "volume", i) for i in range(shape.volume_servers)]
            processes += [_Process("filer", "filer"), _Process("s3", "s3")]
        if "clamd" in chosen:
            processes.append(_Process("clamd", "clamd"))
        for service in SERVICES:
            if service in chosen:
                processes += [_Process(f"{service}-{i}", service, i) for i in range(shape.replicas)]
        processes += [_Process(face, face) for face in ("edge", "demo") if face in chosen]
        return {process.name: process for process in processes}

    def _waves(self) -> list[list[str]]:
        """Groups started together, each ready before the next (see the module's docstring)."""
        by_role: dict[str, list[str]] = {}
        for process in self._layout.values():
            if process.name in self.components:
                by_role.setdefault(process.role, []).append(process.name)
        metadata = by_role.get("metadata", [])
        waves = [
            [*by_role.get("nats", []), *by_role.get("master", []), *by_role.get("clamd", [])],
            by_role.get("volume", []),
            by_role.get("filer", []),
            by_role.get("s3", []),
            metadata[:1],
            [*metadata[1:], *(name for s in SERVICES if s != "metadata" for name in by_role.get(s, []))],
            [*by_role.get("edge", []), *by_role.get("demo", [])],
        ]
        return [wave for wave in waves if wave]

    def _runnable_components(self) -> tuple[str, ...]:
        roles = super()._runnable_components()  # less clamd when there is none
        return tuple(name for name, p in self._layout.items() if p.role in roles or _weed(p.role, roles))

    # ----------------------------------------------------------------------------- inspection

    @property
    def endpoints(self) -> StackEndpoints:
        base = super().endpoints
        host, ports = self.config.host, self.cluster_ports
        processes: dict[str, ProcessEndpoint] = {}
        for process in self._layout.values():
            role, i = process.role, process.index
            if role in SERVICES:
                processes[process.name] = ProcessEndpoint(
                    role=role,
                    address=f"{host}:{ports.port(role, i)}",
                    metrics_url=f"http://{host}:{ports.port(f'{role}_metrics', i)}/metrics",
                )
            elif role == "nats":
                secure = self.config.tls
                processes[process.name] = ProcessEndpoint(
                    role=role,
                    address=f"{'tls' if secure else 'nats'}://{host}:{ports.port('nats', i)}",
                    monitor_url=f"{'https' if secure else 'http'}://{host}:{ports.port('nats_monitor', i)}",
                )
            elif role in ("master", "volume", "filer"):
                processes[process.name] = ProcessEndpoint(
                    role=role, address=f"http://{host}:{ports.port(role, i)}"
                )
            else:
                address = {
                    "s3": base.s3_endpoint,
                    "clamd": base.clamd_addr,
                    "edge": base.edge_url,
                    "demo": base.demo_url,
                }[role]
                processes[process.name] = ProcessEndpoint(role=role, address=address)

        def every(service: str) -> str:
            """Every replica, comma separated: what the channels balance round_robin."""
            listed = [p.address for p in processes.values() if p.role == service]
            return ",".join(listed) or base.service_addr(service)

        return replace(
            base,
            processes=processes,
            metadata_addr=every("metadata"),
            upload_addr=every("upload"),
            processor_addr=every("processor"),
            download_addr=every("download"),
        )

    def info(self) -> StackInfo:
        return replace(super().info(), profile=CLUSTER_PROFILE)

    def replicas(self, role: str) -> list[str]:
        """The names of the running stack's processes of one role (``["metadata-0", "metadata-1"]``)."""
        return [name for name in self.components if self._layout[name].role == role]

    async def stream_info(self, stream: str = _STREAM) -> Any:
        """JetStream's StreamInfo of ``stream`` (its ``cluster.leader`` and ``cluster.replicas``)."""
        connection = await self._nats()
        try:
            return await connection.jetstream().stream_info(stream)
        finally:
            await connection.close()

    async def stream_leader(self, stream: str = _STREAM) -> str | None:
        """The NATS server (``nats-1``) that leads ``stream`` now, or None while it has no leader."""
        info = await self.stream_info(stream)
        leader = info.cluster.leader if info.cluster is not None else None
        return str(leader) if leader else None

    async def bridge_lease_holder(self) -> str | None:
        """The processor replica (``processor-0``) whose bridge holds the lease now, or None."""
        # The processor's own reading of its lease; the stack runs the processor, so it is installed.
        from filestore.processor.bridge.state import lease_holder_pid

        connection = await self._nats()
        try:
            kv = await connection.jetstream().key_value(_LEASE_BUCKET)
            entry = await kv.get(f"seaweedfs.{self.config.bucket}")
        except Exception:  # no bucket yet, no key (nobody holds it), a deleted key
            return None
        finally:
            await connection.close()
        pid = lease_holder_pid(entry.value or b"")
        return next((name for name, known in self.pids.items() if known == pid), None)

    async def _nats(self) -> NatsClient:
        endpoints = self.endpoints
        return await nats.connect(
            servers=list(endpoints.nats_urls),
            connect_timeout=_NATS_CALL_TIMEOUT_S,
            max_reconnect_attempts=1,
            allow_reconnect=False,
            tls=endpoints.tls.client_context() if endpoints.tls is not None else None,
        )

    # ----------------------------------------------------------------------------- lifecycle

    async def _start_all(self) -> None:
        if any(self._layout[name].role in _WEED_ROLES for name in self.components):
            # Every SeaweedFS process must sign and check JWTs with the same keys: written once per
            # start, read again by each process that restarts.
            self._weed_config_dir = self._write_weed_security()
        for wave in self._waves():
            try:
                async with asyncio.TaskGroup() as group:  # one failing stops the others' waiting
                    for name in wave:
                        group.create_task(self._start_component(name))
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            if "nats" in {self._layout[name].role for name in wave}:
                await self._settle(self._nats_meta_leader, "NATS cluster elects a meta leader")
        if any(self._layout[name].role in SERVICES for name in self.components) and any(
            self._layout[name].role == "nats" for name in self.components
        ):
            await self._settle(self.stream_current, f"stream {_STREAM} has every replica current")

    def _stop_plan(self) -> list[tuple[list[str], float]]:
        """Faces, then services, then S3 and the filer, then everything else (NATS, the master, the
        volume servers, clamd): clients of a role stop before it."""
        roles = [
            (("edge", "demo"), 1 / 8),
            (SERVICES, 1 / 4),
            (("s3", "filer"), 1 / 4),
            (("volume", "master", "nats", "clamd"), 3 / 8),
        ]
        names = list(reversed(self._layout))
        return [([n for n in names if self._layout[n].role in group], share) for group, share in roles]

    async def kill(self, component: str) -> None:
        await super().kill(component)
        self._remove_weed_socket(component)

    async def _stop_group(self, components: Iterable[str], grace_s: float) -> None:
        components = list(components)
        await super()._stop_group(components, grace_s)
        for name in components:
            self._remove_weed_socket(name)

    async def _settle(self, check: Callable[[], Awaitable[tuple[bool, str]]], what: str) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        detail = "not checked yet"
        while time.monotonic() < deadline:
            ok, detail = await check()
            if ok:
                return
            await asyncio.sleep(_PROBE_INTERVAL_S)
        raise StackStartError("nats", f"waited {self.config.ready_timeout_s:g}s until the {what}: {detail}")

    async def _nats_meta_leader(self) -> tuple[bool, str]:
        endpoints = self.endpoints
        monitor = next(iter(endpoints.replicas("nats").values())).monitor_url
        context = endpoints.tls.client_context() if endpoints.tls is not None else None
        status = await asyncio.to_thread(_get_json, f"{monitor}/jsz", context)
        meta = (status.get("meta_cluster") or {}) if status else {}
        leader = meta.get("leader")
        return bool(leader), f"meta leader {leader or 'none yet'}"

    async def stream_current(self) -> tuple[bool, str]:
        """Whether the FILES stream has a leader and every other replica is current (its detail)."""
        try:
            info = await self.stream_info()
        except Exception as error:  # not created yet, no leader yet, a server still starting
            return False, f"stream {_STREAM}: {type(error).__name__} {error}"
        cluster = info.cluster
        if cluster is None or not cluster.leader:
            return False, f"stream {_STREAM} has no leader yet"
        replicas = cluster.replicas or []
        current = [r.name for r in replicas if r.current]
        wanted = self.shape.nats_replicas - 1
        return len(current) >= wanted, f"leader {cluster.leader}, current followers {current}"

    # ----------------------------------------------------------------------------- processes

    def _build_process(self, component: str) -> ManagedProcess:
        process = self._layout.get(component)
        if process is None:
            raise StackError(f"{component} is not a process of this cluster")
        role = process.role
        if role in ("clamd", "edge", "demo"):
            # One each, as in the single-node stack (the face reaches every replica through its lists).
            return super()._build_process(role)
        cwd = self._work_dir(process)
        cwd.mkdir(parents=True, exist_ok=True)
        if role == "nats":
            argv = self._nats_node_command(process)
        elif role in _WEED_ROLES:
            self._remove_weed_socket(component)
            argv = self._weed_role_command(process)
        else:
            argv = list(self.config.commands.get(role) or [_require_executable(f"filestore-{role}")])
        return ManagedProcess(
            component, argv, log_path=self.paths.log(component), env=self._process_env(process), cwd=cwd
        )

    def _process_env(self, process: _Process) -> dict[str, str]:
        """The environment of one process: the one place to add what every process of a role needs.
        A service starts from the single-node stack's environment of its role (its TLS files among
        it: one certificate per service serves all its replicas, whose addresses it names)."""
        if process.role not in SERVICES:
            return dict(os.environ)
        endpoints, ports, host = self.endpoints, self.cluster_ports, self.config.host
        env = self._service_env(process.role)
        env.update(
            FILESTORE_LISTEN=f"{host}:{ports.port(process.role, process.index)}",
            FILESTORE_METRICS_PORT=str(ports.port(f"{process.role}_metrics", process.index)),
            FILESTORE_NATS_URL=",".join(endpoints.nats_urls),
            FILESTORE_NATS_REPLICAS=str(self.shape.nats_replicas),
        )
        env.update(self.config.extra_env.get(process.role, {}))
        if process.role == "upload" and "demo" in self.components:
            env["FILESTORE_CORS_ORIGINS"] = _with_origin(
                env.get("FILESTORE_CORS_ORIGINS", ""), self._demo_origin
            )
        return env

    def _work_dir(self, process: _Process) -> Path:
        if process.role == "nats":
            return self.paths.nats / process.name
        if process.role in _WEED_ROLES:
            return self.paths.seaweedfs / process.name
        return self.paths.home

    def _nats_node_command(self, process: _Process) -> list[str]:
        host, ports = self.config.host, self.cluster_ports
        routes = [
            f"nats-route://{host}:{ports.port('nats_cluster', i)}" for i in range(self.shape.nats_nodes)
        ]
        cluster = ""
        if self.shape.nats_nodes > 1:
            cluster = (
                "cluster {\n"
                f"  name: {json.dumps(_NATS_CLUSTER_NAME)}\n"
                f"  host: {json.dumps(host)}\n"
                f"  port: {ports.port('nats_cluster', process.index)}\n"
                # Its own address among them is recognised and skipped.
                f"  routes: {json.dumps(routes)}\n"
                "}\n"
            )
        if self._tls is not None and cluster:
            cluster = cluster.removesuffix("}\n") + nats_route_tls_config(self._tls) + "}\n"
        work = self._work_dir(process)
        monitor = f"{host}:{ports.port('nats_monitor', process.index)}"
        conf = work / "nats-server.conf"
        conf.write_text(
            "# Written by filestore-stack at every start; edits are lost.\n"
            # The stream's leader and replicas are reported by server name.
            f"server_name: {json.dumps(process.name)}\n"
            f"host: {json.dumps(host)}\n"
            f"port: {ports.port('nats', process.index)}\n"
            # With TLS the monitor is served over HTTPS with the server's certificate.
            f"{'https' if self._tls is not None else 'http'}: {json.dumps(monitor)}\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(work / 'jetstream'))}\n}}\n"
            + cluster
            + (nats_tls_config(self._tls) if self._tls is not None else ""),
            encoding="utf-8",
        )
        return [_require_executable("nats-server"), "--config", str(conf)]

    def _weed_address(self, role: str) -> str:
        """``host:port.grpcport``: how one SeaweedFS process names another whose gRPC port is not
        its HTTP port + 10000."""
        ports = self.cluster_ports
        return f"{self.config.host}:{ports.port(role)}.{ports.port(f'{role}_grpc')}"

    def _weed_role_command(self, process: _Process) -> list[str]:
        host, ports, work = self.config.host, self.cluster_ports, self._work_dir(process)
        assert self._weed_config_dir is not None, "_start_all writes the SeaweedFS security config first"
        glog_dir = self.paths.logs / "seaweedfs"
        glog_dir.mkdir(parents=True, exist_ok=True)
        common = [
            _require_executable("weed"),
            f"-config_dir={self._weed_config_dir}",
            "-logtostderr=true",
            f"-logdir={glog_dir}",
        ]
        sockets = self._socket_dir()
        if process.role == "master":
            return [
                *common,
                "master",
                f"-ip={host}",
                f"-ip.bind={host}",
                f"-port={ports.port('master')}",
                f"-port.grpc={ports.port('master_grpc')}",
                f"-mdir={work}",
                f"-defaultReplication={self.shape.replication}",
                # One master: no Raft quorum to wait for.
                "-peers=none",
                "-telemetry=false",
                # Small volumes, grown as needed: a local cluster has little disk to reserve.
                "-volumeSizeLimitMB=1024",
            ]
        if process.role == "volume":
            i = process.index
            return [
                *common,
                "volume",
                f"-ip={host}",
                f"-ip.bind={host}",
                f"-port={ports.port('volume', i)}",
                f"-port.grpc={ports.port('volume_grpc', i)}",
                f"-dir={work}",
                f"-master={self._weed_address('master')}",
                # Replication 001 places copies on different servers of one rack and data centre.
                "-dataCenter=dc0",
                "-rack=rack0",
                # 0: as many volumes as the disk holds (the default 8 runs out with replicated growth).
                "-max=0",
                # Nobody on one machine needs the grace period to move traffic; stops faster.
                "-preStopSeconds=0",
            ]
        if process.role == "filer":
            return [
                *common,
                "filer",
                f"-ip={host}",
                f"-ip.bind={host}",
                f"-port={ports.port('filer')}",
                f"-port.grpc={ports.port('filer_grpc')}",
                f"-master={self._weed_address('master')}",
                f"-defaultStoreDir={work}",
                f"-localSocket={sockets / 'filer.sock'}",
            ]
        return [
            *common,
            "s3",
            f"-ip.bind={host}",
            f"-port={ports.port('s3')}",
            f"-port.grpc={ports.port('s3_grpc')}",
            f"-filer={self._weed_address('filer')}",
            f"-config={self.paths.s3_identities}",
            f"-localSocket={sockets / 's3.sock'}",
            # Iceberg and Lance catalogues would listen on fixed ports (8181, 9101); 0 disables them.
            "-port.iceberg=0",
            "-port.lance=0",
            *(weed_s3_tls_args(self._tls, flag_prefix="") if self._tls is not None else ()),
        ]

    def _remove_weed_socket(self, component: str) -> None:
        """weed leaves a unix socket per gRPC server in /tmp, named after its port; remove ours while
        the process is not running (as the single-node stack does for weed mini)."""
        process = self._layout.get(component)
        if process is None or process.role not in _WEED_ROLES:
            return
        proc = self._processes.get(component)
        if proc is not None and proc.running:
            return
        port = self.cluster_ports.port(f"{process.role}_grpc", process.index)
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port}.sock"):
            with contextlib.suppress(OSError):
                sock.unlink()

    # ----------------------------------------------------------------------------- readiness

    def _readiness_probe(self, component: str) -> Callable[[], Awaitable[tuple[bool, str]]]:
        endpoints = self.endpoints
        process = endpoints.processes[component]
        role = process.role
        if role == "s3":
            return self._s3_with_bucket
        if role == "volume":
            return lambda: asyncio.to_thread(_volume_registered, endpoints.master_url, process.address)
        if role == "master":
            return lambda: asyncio.to_thread(_master_has_leader, process.address)
        return lambda: probe_process(endpoints, process)

    async def _s3_with_bucket(self) -> tuple[bool, str]:
        """Ready when the bucket answers; creates it the first time (``weed s3`` has no -bucket)."""
        endpoints = self.endpoints
        ok, detail = await probe_s3(
            endpoints.s3_endpoint,
            region=endpoints.s3_region,
            bucket=endpoints.bucket,
            access_key=endpoints.s3_access_key,
            secret_key=endpoints.s3_secret_key,
            tls=endpoints.tls,
        )
        if not ok and ("404" in detail or "NoSuchBucket" in detail):
            return await asyncio.to_thread(_create_bucket, endpoints)
        return ok, detail

    # ----------------------------------------------------------------------------- ports

    def _process_ports(self, component: str) -> list[tuple[str, int]]:
        process = self._layout[component]
        role, i, ports = process.role, process.index, self.cluster_ports
        if role in SERVICES:
            kinds = [role, f"{role}_metrics"]
        elif role == "nats":
            return [(f"{kind}-{i}", ports.port(kind, i)) for kind in ("nats", "nats_monitor", "nats_cluster")]
        elif role in _WEED_ROLES:
            kinds = [role, f"{role}_grpc"]
        else:
            kinds = [role]
        return [(f"{kind}-{i}", ports.port(kind, i)) for kind in kinds]

    def _port_conflicts(self, components: Iterable[str]) -> StackPortInUseError | None:
        host = self.config.host
        for component in components:
            for name, port in self._process_ports(component):
                if not _port_is_free(host, port):
                    return StackPortInUseError(
                        port=port,
                        name=name,
                        host=host,
                        env_var="FILESTORE_STACK_<NAME>_PORT (the first of each)",
                    )
        return None


def _weed(role: str, roles: tuple[str, ...]) -> bool:
    return role in _WEED_ROLES and "seaweedfs" in roles


def _get_json(url: str, context: ssl.SSLContext | None = None) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as response:
            body = json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return body if isinstance(body, dict) else None


def _master_has_leader(master_url: str) -> tuple[bool, str]:
    status = _get_json(f"{master_url}/cluster/status")
    if status is None:
        return False, "master /cluster/status does not answer"
    leader = status.get("Leader")
    return bool(leader), f"master leader {leader or 'none yet'}"


def _volume_registered(master_url: str, volume_url: str) -> tuple[bool, str]:
    """Whether this volume server has registered with the master (it can be written to)."""
    status = _get_json(f"{master_url}/dir/status")
    if status is None:
        return False, "master /dir/status does not answer"
    wanted = volume_url.removeprefix("http://")
    nodes = [
        node.get("Url")
        for center in status.get("Topology", {}).get("DataCenters") or []
        for rack in center.get("Racks") or []
        for node in rack.get("DataNodes") or []
    ]
    return wanted in nodes, f"registered volume servers {nodes}"


def _create_bucket(endpoints: StackEndpoints) -> tuple[bool, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    from filestore.stack.probes import _s3_client

    client = _s3_client(
        endpoints.s3_endpoint,
        endpoints.s3_region,
        endpoints.s3_access_key,
        endpoints.s3_secret_key,
        ca_file=endpoints.tls.ca_file if endpoints.tls is not None else None,
    )
    try:
        client.create_bucket(Bucket=endpoints.bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False, f"CreateBucket {endpoints.bucket}: {code or exc}"
    except BotoCoreError as exc:
        return False, f"CreateBucket {endpoints.bucket}: {exc}"
    return False, f"bucket {endpoints.bucket} created"
