"""Where a running stack answers, and its ``stack.json`` description for other processes.

``stack.json`` (written 0600 to ``$FILESTORE_HOME/stack.json``) holds no secret itself: the S3
keys and the token secret stay in their own 0600 files, which it names. Format, version 1::

    {
      "version": 1,
      "home": "/abs/.filestore",
      "host": "127.0.0.1",
      "s3_endpoint": "http://127.0.0.1:8333",
      "s3_region": "us-east-1",
      "bucket": "filestore",
      "s3_credentials_file": "/abs/.filestore/secrets/s3_credentials.json",
      "auth_secret_file": "/abs/.filestore/secrets/auth_secret",
      "nats_url": "nats://127.0.0.1:4322",
      "nats_monitor_url": "http://127.0.0.1:8322",
      "filer_grpc": "127.0.0.1:18888",
      "filer_url": "http://127.0.0.1:8888",
      "master_url": "http://127.0.0.1:9333",
      "database_url": "sqlite+aiosqlite:////abs/.filestore/metadata.db",
      "metadata_addr": "127.0.0.1:50051",
      "upload_addr": "127.0.0.1:50052",
      "processor_addr": "127.0.0.1:50053",
      "download_addr": "127.0.0.1:50054",
      "edge_url": "http://127.0.0.1:8090",
      "demo_url": "http://127.0.0.1:8091/",
      "clamd_addr": "127.0.0.1:3320",
      "metrics_urls": {"metadata": "http://127.0.0.1:9151/metrics", "upload": ..., ...},
      "components": ["seaweedfs", "nats", "metadata", "upload", "processor", "download"],
      "pids": {"seaweedfs": 1234, "nats": 1235, "metadata": 1236, ...},
      "logs_dir": "/abs/.filestore/logs",
      "tls": null
    }

A stack that runs several processes per role (``filestore-stack run --profile cluster``, see
:mod:`filestore.stack.cluster`) says ``"profile": "cluster"`` and adds ``processes``, one entry per
process, by the name ``components`` and ``pids`` use::

      "processes": {
        "metadata-0": {"role": "metadata", "address": "127.0.0.1:50051",
                       "metrics_url": "http://127.0.0.1:9151/metrics"},
        "nats-1": {"role": "nats", "address": "nats://127.0.0.1:4323", "monitor_url": "http://127.0.0.1:8323"},
        "volume-0": {"role": "volume", "address": "http://127.0.0.1:9340"}, ...
      }

Its one-address fields stay usable by any client: ``metadata_addr`` (and upload, processor, download)
lists every replica, comma separated, which Filestore's channels balance round_robin; ``nats_url`` is
the first NATS server (a client learns the others from it; ``StackEndpoints.nats_urls`` lists all);
``metrics_urls`` names each service's first replica. A single-node stack.json has neither field
(``"profile"`` absent means ``"single"``).

``s3_credentials_file`` is JSON ``{"access_key": ..., "secret_key": ...}``; ``auth_secret_file``
holds the HS256 secret as one line of text.

A TLS stack (``FILESTORE_STACK_TLS=1``) says ``https://`` for S3 and the browser face, ``tls://``
for NATS and ``https://`` for its monitor, and names what a client connects with::

      "tls": {"ca_file": "/abs/.filestore/tls/ca.pem",
              "client_cert_file": "/abs/.filestore/tls/client-user.pem",
              "client_key_file": "/abs/.filestore/tls/client-user.key"}

(the gRPC services demand a client certificate signed by that CA; storage and the face only the CA).
A stack.json without ``tls`` (or with null) describes a plaintext stack.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from filestore.core.tls import TlsSettings
from filestore.server.settings import S3Settings
from filestore.stack.config import SERVICES, StackConfig
from filestore.stack.credentials import (
    StackCredentials,
    read_auth_secret,
    read_s3_credentials,
    read_service_s3_keys,
    write_private_file,
)
from filestore.stack.errors import StackConfigError
from filestore.stack.probes import probe_clamd, probe_grpc_health, probe_http_health, probe_nats, probe_s3
from filestore.stack.tls import user_tls_settings

__all__ = [
    "STACK_JSON_VERSION",
    "ProcessEndpoint",
    "StackEndpoints",
    "StackInfo",
    "check_health",
    "load_stack_json",
]

STACK_JSON_VERSION: Final = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessEndpoint:
    """Where one process of a multi-process stack answers.

    ``role`` is what it is: a service (``metadata``, ``upload``, ``processor``, ``download``), ``nats``,
    a SeaweedFS role (``master``, ``volume``, ``filer``, ``s3``), ``clamd``, ``edge`` or ``demo``.
    ``address`` is ``host:port`` for gRPC services and clamd, the client URL for NATS, the base URL for
    HTTP servers; ``monitor_url`` is a NATS server's monitoring endpoint, ``metrics_url`` a service's
    Prometheus endpoint.
    """

    role: str
    address: str
    metrics_url: str = ""
    monitor_url: str = ""

    def to_json(self) -> dict[str, str]:
        fields = {"role": self.role, "address": self.address}
        if self.metrics_url:
            fields["metrics_url"] = self.metrics_url
        if self.monitor_url:
            fields["monitor_url"] = self.monitor_url
        return fields

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessEndpoint:
        return cls(
            role=str(data["role"]),
            address=str(data["address"]),
            metrics_url=str(data.get("metrics_url", "")),
            monitor_url=str(data.get("monitor_url", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StackEndpoints:
    """Addresses of every component, plus the secrets a client of the stack needs."""

    host: str
    s3_endpoint: str
    s3_region: str
    bucket: str
    nats_url: str
    nats_monitor_url: str
    filer_grpc: str
    filer_url: str
    master_url: str
    database_url: str
    metadata_addr: str
    upload_addr: str
    processor_addr: str
    download_addr: str
    #: clamd's TCP address (host:port), for the processor's virus scan.
    clamd_addr: str
    #: The browser face's base URL (Connect and gRPC-Web): ``{edge_url}/filestore.v1.UploadService/...``.
    #: Empty in a stack.json written before the face existed.
    edge_url: str = ""
    #: The demo page (the local stack only): open it in a browser. Empty in an older stack.json.
    demo_url: str = ""
    credentials: StackCredentials
    #: Each service's Prometheus endpoint, by service name (absent from a stack.json written by an
    #: older stack, or by a stack whose services expose none).
    metrics_urls: Mapping[str, str] = field(default_factory=dict)
    #: A TLS stack's CA and the user's client certificate (see the module's docstring); None: plaintext.
    tls: TlsSettings | None = None
    #: Every process by name, when the stack runs several per role (the cluster profile); empty for the
    #: single-node stack, whose components are the roles themselves.
    processes: Mapping[str, ProcessEndpoint] = field(default_factory=dict)

    def replicas(self, role: str) -> dict[str, ProcessEndpoint]:
        """The processes of one role, by name (``{"metadata-0": ..., "metadata-1": ...}``); empty for
        a single-node stack."""
        return {name: process for name, process in self.processes.items() if process.role == role}

    @property
    def nats_urls(self) -> tuple[str, ...]:
        """Every NATS server's client URL (one, in a single-node stack)."""
        return tuple(p.address for p in self.replicas("nats").values()) or (self.nats_url,)

    @property
    def s3_access_key(self) -> str:
        return self.credentials.s3_access_key

    @property
    def s3_secret_key(self) -> str:
        return self.credentials.s3_secret_key

    @property
    def auth_secret(self) -> str:
        return self.credentials.auth_secret

    def admin_s3_settings(self) -> S3Settings:
        """Storage as the stack's administrator sees it (every action on the bucket): for tests and
        for operator tools such as the reconciler, never for a service."""
        return S3Settings(
            endpoint=self.s3_endpoint,
            public_endpoint=self.s3_endpoint,
            region=self.s3_region,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key,
            bucket=self.bucket,
            ca_file=self.tls.ca_file if self.tls is not None else None,
        )

    def service_addr(self, service: str) -> str:
        """host:port of one of the four services."""
        if service not in SERVICES:
            raise KeyError(service)
        addr: str = getattr(self, f"{service}_addr")
        return addr

    @classmethod
    def from_config(cls, config: StackConfig, credentials: StackCredentials) -> StackEndpoints:
        host, ports = config.host, config.ports
        https, nats = ("https", "tls") if config.tls else ("http", "nats")
        return cls(
            host=host,
            s3_endpoint=f"{https}://{host}:{ports.s3}",
            s3_region=config.region,
            bucket=config.bucket,
            nats_url=f"{nats}://{host}:{ports.nats}",
            nats_monitor_url=f"{https}://{host}:{ports.nats_monitor}",
            filer_grpc=f"{host}:{ports.filer_grpc}",
            filer_url=f"http://{host}:{ports.filer}",
            master_url=f"http://{host}:{ports.master}",
            database_url=config.resolved_database_url,
            metadata_addr=f"{host}:{ports.metadata}",
            upload_addr=f"{host}:{ports.upload}",
            processor_addr=f"{host}:{ports.processor}",
            download_addr=f"{host}:{ports.download}",
            clamd_addr=f"{host}:{ports.clamd}",
            edge_url=f"{https}://{host}:{ports.edge}",
            demo_url=f"http://{host}:{ports.demo}/",
            credentials=credentials,
            metrics_urls={
                service: f"http://{host}:{ports.metrics_port(service)}/metrics" for service in SERVICES
            },
            tls=user_tls_settings(config.paths.tls) if config.tls else None,
        )

    def to_json(self) -> dict[str, str]:
        """The endpoint fields of stack.json (secrets excluded)."""
        return {
            "host": self.host,
            "s3_endpoint": self.s3_endpoint,
            "s3_region": self.s3_region,
            "bucket": self.bucket,
            "nats_url": self.nats_url,
            "nats_monitor_url": self.nats_monitor_url,
            "filer_grpc": self.filer_grpc,
            "filer_url": self.filer_url,
            "master_url": self.master_url,
            "database_url": self.database_url,
            "metadata_addr": self.metadata_addr,
            "upload_addr": self.upload_addr,
            "processor_addr": self.processor_addr,
            "download_addr": self.download_addr,
            "clamd_addr": self.clamd_addr,
            "edge_url": self.edge_url,
            "demo_url": self.demo_url,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StackInfo:
    """What ``stack.json`` says about a (probably) running stack."""

    home: Path
    endpoints: StackEndpoints
    components: tuple[str, ...]
    pids: Mapping[str, int] = field(default_factory=dict)
    s3_credentials_file: Path
    auth_secret_file: Path
    logs_dir: Path
    #: ``single`` (one process per component) or ``cluster`` (see :mod:`filestore.stack.cluster`).
    profile: str = "single"

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.profile != "single":
            extra["profile"] = self.profile
        if self.endpoints.processes:
            extra["processes"] = {name: p.to_json() for name, p in self.endpoints.processes.items()}
        return {
            "version": STACK_JSON_VERSION,
            "home": str(self.home),
            **self.endpoints.to_json(),
            "metrics_urls": dict(self.endpoints.metrics_urls),
            "s3_credentials_file": str(self.s3_credentials_file),
            "auth_secret_file": str(self.auth_secret_file),
            "components": list(self.components),
            "pids": dict(self.pids),
            "logs_dir": str(self.logs_dir),
            "tls": _tls_to_json(self.endpoints.tls),
            **extra,
        }

    def write(self, path: Path) -> Path:
        write_private_file(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path


def load_stack_json(path: Path) -> StackInfo:
    """Read ``stack.json`` and the secret files it names."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackConfigError(f"no stack description at {path}; is the stack running?") from None
    except (OSError, ValueError) as exc:
        raise StackConfigError(f"{path} is not a readable stack.json ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != STACK_JSON_VERSION:
        raise StackConfigError(f"{path} is not a version {STACK_JSON_VERSION} stack.json")
    try:
        s3_credentials_file = Path(data["s3_credentials_file"])
        auth_secret_file = Path(data["auth_secret_file"])
        access_key, secret_key = read_s3_credentials(s3_credentials_file)
        credentials = StackCredentials(
            s3_access_key=access_key,
            s3_secret_key=secret_key,
            auth_secret=read_auth_secret(auth_secret_file),
            service_s3_keys=read_service_s3_keys(s3_credentials_file),
        )
        endpoint_fields = StackEndpoints.__dataclass_fields__.keys() - {
            "credentials",
            "metrics_urls",
            "edge_url",
            "demo_url",
            "tls",
            "processes",
        }
        endpoints = StackEndpoints(
            credentials=credentials,
            tls=_tls_from_json(data.get("tls")),
            metrics_urls={str(k): str(v) for k, v in dict(data.get("metrics_urls", {})).items()},
            edge_url=str(data.get("edge_url", "")),
            demo_url=str(data.get("demo_url", "")),
            processes={
                str(name): ProcessEndpoint.from_json(process)
                for name, process in dict(data.get("processes", {})).items()
            },
            **{k: str(data[k]) for k in endpoint_fields},
        )
        return StackInfo(
            home=Path(data["home"]),
            endpoints=endpoints,
            components=tuple(str(c) for c in data["components"]),
            pids={str(k): int(v) for k, v in dict(data["pids"]).items()},
            s3_credentials_file=s3_credentials_file,
            auth_secret_file=auth_secret_file,
            logs_dir=Path(data["logs_dir"]),
            profile=str(data.get("profile", "single")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StackConfigError(f"{path} is missing or has a malformed field ({exc})") from None


def _tls_to_json(tls: TlsSettings | None) -> dict[str, str | None] | None:
    if tls is None:
        return None
    return {
        "ca_file": tls.ca_file,
        "client_cert_file": tls.client_cert_file,
        "client_key_file": tls.client_key_file,
    }


def _tls_from_json(data: Any) -> TlsSettings | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("ca_file"), str):
        raise ValueError("tls must name at least a ca_file")
    optional = {k: data.get(k) for k in ("client_cert_file", "client_key_file")}
    if any(v is not None and not isinstance(v, str) for v in optional.values()):
        raise ValueError("tls client_cert_file and client_key_file must be paths")
    return TlsSettings(ca_file=data["ca_file"], **optional)


async def check_health(endpoints: StackEndpoints, components: tuple[str, ...]) -> dict[str, tuple[bool, str]]:
    """Probe each component once, concurrently: {component: (healthy, detail)}."""

    async def probe(component: str) -> tuple[bool, str]:
        if component in endpoints.processes:
            return await probe_process(endpoints, endpoints.processes[component])
        if component == "seaweedfs":
            return await probe_s3(
                endpoints.s3_endpoint,
                region=endpoints.s3_region,
                bucket=endpoints.bucket,
                access_key=endpoints.s3_access_key,
                secret_key=endpoints.s3_secret_key,
                tls=endpoints.tls,
            )
        if component == "nats":
            return await probe_nats(endpoints.nats_monitor_url, tls=endpoints.tls)
        if component == "clamd":
            return await probe_clamd(endpoints.clamd_addr)
        if component == "edge":
            return await probe_http_health(endpoints.edge_url, tls=endpoints.tls)
        if component == "demo":
            return await probe_http_health(endpoints.demo_url.rstrip("/"))
        return await probe_grpc_health(endpoints.service_addr(component), tls=endpoints.tls)

    results = await asyncio.gather(*(probe(c) for c in components))
    return dict(zip(components, results, strict=True))


async def probe_process(endpoints: StackEndpoints, process: ProcessEndpoint) -> tuple[bool, str]:
    """Probe one process of a multi-process stack once, by its role."""
    role, tls = process.role, endpoints.tls
    if role in SERVICES:
        return await probe_grpc_health(process.address, tls=tls)
    if role == "nats":
        return await probe_nats(process.monitor_url, tls=tls)
    if role == "clamd":
        return await probe_clamd(process.address)
    if role == "s3":
        return await probe_s3(
            process.address,
            region=endpoints.s3_region,
            bucket=endpoints.bucket,
            access_key=endpoints.s3_access_key,
            secret_key=endpoints.s3_secret_key,
            tls=tls,
        )
    if role == "demo":
        return await probe_http_health(process.address.rstrip("/"))
    # edge (HTTPS in a TLS stack), and SeaweedFS's master, volume servers and filer (plaintext on
    # the stack's host), all answer /healthz.
    return await probe_http_health(process.address, tls=tls)
