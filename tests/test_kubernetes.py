"""deploy/kubernetes, rendered (``kubectl kustomize``, both overlays) and checked against the code.

Each Filestore Deployment's environment (its ``env`` and the ConfigMaps and Secrets of its ``envFrom``,
which must be in the render) goes through the settings parser the service runs at start: a setting the
service requires that the manifests do not set fails here, and so does a variable no parser reads (how a
misspelt one would show). The variables come from the parsers themselves, never from a list of names.
Then what keeps the pods healthy: probes on the ports the settings name, resources, a budget and a
policy for every Deployment, graceful termination at least as long as the drain the settings allow,
the migration before metadata, balanced addresses, autoscaling on the consumers the worker uses.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from filestore.core.env import Env, SettingsError
from filestore.download.settings import DownloadSettings
from filestore.edge.settings import EdgeSettings
from filestore.metadata.settings import MetadataSettings
from filestore.processor import worker
from filestore.processor.settings import ProcessorSettings
from filestore.server.events import DRAIN_TIMEOUT_S
from filestore.upload.settings import UploadSettings

REPO = Path(__file__).resolve().parents[1]
SETTINGS_BY_COMMAND: Mapping[str, Any] = {
    "filestore-metadata": MetadataSettings,
    "filestore-upload": UploadSettings,
    "filestore-processor": ProcessorSettings,
    "filestore-download": DownloadSettings,
    "filestore-edge": EdgeSettings,
}
AUTOSCALED_BY_CPU = {"metadata", "upload", "download", "edge"}


def _load_check_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_check", REPO / "scripts" / "k8s_check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


K8S_CHECK = _load_check_script()


@pytest.fixture(scope="module", params=K8S_CHECK.OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = K8S_CHECK.render(request.param)
    return documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {document["metadata"]["name"]: document for document in documents if document["kind"] == kind}


def filestore_deployments(documents: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, its Filestore container) for every Deployment that runs a Filestore service."""
    for deployment in of_kind(documents, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container.get("command", [""])[0] in SETTINGS_BY_COMMAND:
                yield deployment, container


class RecordingEnv(dict[str, str]):
    """An environment that remembers which variables the settings parser looked at."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def environment_of(documents: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """What the container's process finds in its environment, from objects of this render only."""
    config_maps, secrets = of_kind(documents, "ConfigMap"), of_kind(documents, "Secret")
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in config_maps, f"{container['name']}: ConfigMap {name} is not in the render"
            environment.update(config_maps[name].get("data", {}))
        else:
            name = source["secretRef"]["name"]
            assert name in secrets, f"{container['name']}: Secret {name} is not in the render"
            secret = secrets[name]
            # Values are never read here: a Secret only proves that it provides the key.
            environment.update(
                {key: "from-secret" for key in {**secret.get("data", {}), **secret.get("stringData", {})}}
            )
    for variable in container.get("env", []):
        assert "value" in variable, (
            f"{container['name']}: {variable['name']} must come from envFrom or a value"
        )
        environment[variable["name"]] = variable["value"]
    return environment


def mounted_files(
    documents: list[dict[str, Any]], deployment: dict[str, Any], container: dict[str, Any], tmp_path: Path
) -> dict[str, str]:
    """Each file path the container can read from a mounted Secret of the render -> a real local file."""
    secrets = of_kind(documents, "Secret")
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"].get("volumes", [])}
    files: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        assert source["secretName"] in secrets, f"Secret {source['secretName']} is not in the render"
        for key in secrets[source["secretName"]].get("data", {}):
            local = tmp_path / deployment["metadata"]["name"] / key
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text("stand-in", encoding="utf-8")
            files[f"{mount['mountPath']}/{key}"] = str(local)
    return files


def parsed_settings(
    documents: list[dict[str, Any]], deployment: dict[str, Any], container: dict[str, Any], tmp_path: Path
) -> tuple[Any, dict[str, str], RecordingEnv]:
    """The container's settings as its service parses them, the environment, and what was read."""
    raw = environment_of(documents, container)
    files = mounted_files(documents, deployment, container, tmp_path)
    # The parser checks that *_FILE settings name readable files: here, the stand-ins of mounted keys.
    local = {
        name: files.get(value, value) if name.endswith("_FILE") else value for name, value in raw.items()
    }
    for name, value in raw.items():
        if name.endswith("_FILE"):
            assert value in files, f"{deployment['metadata']['name']}: {name}={value} is in no mounted Secret"
    # Secrets stand in for values; give them a shape each parser accepts (the real ones are the operator's).
    shaped = {
        name: ("postgresql+asyncpg://stand-in@db/filestore" if name == "FILESTORE_DATABASE_URL" else "s" * 40)
        if value == "from-secret"
        else value
        for name, value in local.items()
    }
    recording = RecordingEnv(shaped)
    settings = SETTINGS_BY_COMMAND[container["command"][0]].from_env(Env(recording))
    return settings, raw, recording


def test_every_object_is_valid_against_its_schema(rendered: list[dict[str, Any]]) -> None:
    for document in rendered:
        K8S_CHECK.validate(document)


def test_the_validation_refuses_a_misspelt_field_and_an_unknown_kind(rendered: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(of_kind(rendered, "Deployment")["metadata"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 8086}}
    with pytest.raises(K8S_CHECK.CheckFailed, match="readinesProbe"):
        K8S_CHECK.validate(deployment)
    scaled = copy.deepcopy(of_kind(rendered, "ScaledObject")["processor"])
    del scaled["spec"]["triggers"][0]["metadata"]["consumer"]
    with pytest.raises(K8S_CHECK.CheckFailed, match="consumer"):
        K8S_CHECK.validate(scaled)
    with pytest.raises(K8S_CHECK.CheckFailed, match="no schema"):
        K8S_CHECK.validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_every_setting_a_service_requires_is_set_and_every_variable_is_read(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    seen = set()
    for deployment, container in filestore_deployments(rendered):
        name = deployment["metadata"]["name"]
        try:
            _, raw, recording = parsed_settings(rendered, deployment, container, tmp_path)
        except SettingsError as error:
            pytest.fail(f"{name} would not start: {error}")
        unread = {variable for variable in raw if variable.startswith("FILESTORE_")} - recording.read
        assert not unread, f"{name} is given variables its settings never read: {sorted(unread)}"
        # The settings the code requires (no default): each one, taken away, stops the service.
        for variable in sorted(recording.read & set(raw)):
            without = RecordingEnv({key: value for key, value in recording.items() if key != variable})
            stops = None
            try:
                SETTINGS_BY_COMMAND[container["command"][0]].from_env(Env(without))
            except SettingsError as error:
                stops = str(error)
            assert stops is None or variable in stops, (name, variable, stops)
        seen.add(container["command"][0])
    assert seen == set(SETTINGS_BY_COMMAND)


def test_no_secret_value_is_inlined_in_a_deployment(rendered: list[dict[str, Any]]) -> None:
    for _, container in filestore_deployments(rendered):
        inlined = {variable["name"] for variable in container.get("env", [])}
        assert not inlined & {"FILESTORE_AUTH_SECRET", "FILESTORE_S3_SECRET_KEY", "FILESTORE_DATABASE_URL"}


def test_probes_use_the_health_port_the_settings_name(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    for deployment, container in filestore_deployments(rendered):
        settings, _, _ = parsed_settings(rendered, deployment, container, tmp_path)
        listen_port = int(settings.server.listen.rpartition(":")[2])
        assert settings.server.listen.startswith("0.0.0.0:")
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, (deployment["metadata"]["name"], probe)
            if container["command"][0] == "filestore-edge":
                # The browser face serves HTTP: its /healthz on the listen port.
                assert container[probe]["httpGet"]["path"] == "/healthz"
                assert ports[container[probe]["httpGet"]["port"]] == listen_port
            else:
                assert container[probe]["grpc"]["port"] == settings.server.health_port != 0
        if container["command"][0] != "filestore-edge":
            assert ports["grpc"] == listen_port
            assert ports["metrics"] == settings.server.observability.metrics_port


def test_every_deployment_has_resources_a_budget_and_a_policy(rendered: list[dict[str, Any]]) -> None:
    budgets = of_kind(rendered, "PodDisruptionBudget").values()
    policies = of_kind(rendered, "NetworkPolicy").values()
    for deployment in of_kind(rendered, "Deployment").values():
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (
                    name,
                    container["name"],
                    bound,
                )
        assert spec.get("serviceAccountName"), name

        def selects(selector: Mapping[str, Any], labels: Mapping[str, str] = labels) -> bool:
            wanted = selector.get("matchLabels", {})
            return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())

        assert any(selects(budget["spec"]["selector"]) for budget in budgets), (
            f"{name} has no PodDisruptionBudget"
        )
        own = [
            p
            for p in policies
            if selects(p["spec"]["podSelector"]) and "name" in str(p["spec"]["podSelector"])
        ]
        assert own, f"{name} has no NetworkPolicy of its own"
        default_deny = of_kind(rendered, "NetworkPolicy")["default-deny"]
        assert selects(default_deny["spec"]["podSelector"]), f"{name} is not under the default deny"
    assert not default_deny["spec"].get("ingress")
    assert not default_deny["spec"].get("egress")


def test_termination_grace_covers_the_drain_the_settings_allow(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    for deployment, container in filestore_deployments(rendered):
        settings, _, _ = parsed_settings(rendered, deployment, container, tmp_path)
        drain = settings.server.shutdown_grace_s
        command = container["command"][0]
        if command == "filestore-processor":
            # The worker lets the events in hand finish for up to ack_wait_s, then NATS drains.
            drain += settings.ack_wait_s + DRAIN_TIMEOUT_S
        elif command in {"filestore-upload", "filestore-download"}:
            drain += DRAIN_TIMEOUT_S
        elif command == "filestore-metadata":
            drain += settings.s3.control_timeout_s if settings.s3 else 0
        else:
            drain += 1  # the face waits for uvicorn one second past its grace
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > drain, (deployment["metadata"]["name"], grace, drain)


def test_migrations_run_before_metadata_starts(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    deployment = of_kind(rendered, "Deployment")["metadata"]
    spec = deployment["spec"]["template"]["spec"]
    (migrate,) = spec["initContainers"]
    assert migrate["command"] == ["python", "-m", "filestore.metadata.db.migrate", "upgrade"]
    (container,) = spec["containers"]
    assert migrate["image"] == container["image"]
    database = [source for source in container["envFrom"] if "secretRef" in source]
    assert {
        "secretRef": {"name": next(s["secretRef"]["name"] for s in database if "database" in str(s))}
    } in migrate["envFrom"]
    settings, _, _ = parsed_settings(rendered, deployment, container, tmp_path)
    assert settings.migrate_on_start is False
    assert settings.database_url.startswith("postgresql+asyncpg://")


def test_service_addresses_are_headless_names_balanced_by_the_clients(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    services = of_kind(rendered, "Service")
    deployments = of_kind(rendered, "Deployment")
    for deployment, container in filestore_deployments(rendered):
        settings, _, _ = parsed_settings(rendered, deployment, container, tmp_path)
        addresses = [
            getattr(settings, field)
            for field in ("metadata_address", "upload_address", "download_address", "processor_address")
            if hasattr(settings, field)
        ]
        for address in addresses:
            host, _, port = address.removeprefix("dns:///").rpartition(":")
            assert address.startswith("dns:///"), address
            service = services[host]
            assert service["spec"]["clusterIP"] == "None", host
            (target,) = [
                d
                for d in deployments.values()
                if d["spec"]["selector"]["matchLabels"].items() >= service["spec"]["selector"].items()
            ]
            target_ports = {
                p["containerPort"]
                for c in target["spec"]["template"]["spec"]["containers"]
                for p in c["ports"]
            }
            assert int(port) in target_ports, address


def test_autoscaling(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    autoscalers = of_kind(rendered, "HorizontalPodAutoscaler")
    assert {hpa["spec"]["scaleTargetRef"]["name"] for hpa in autoscalers.values()} == AUTOSCALED_BY_CPU
    scaled = of_kind(rendered, "ScaledObject")["processor"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "processor"
    deployment = of_kind(rendered, "Deployment")["processor"]
    settings, _, _ = parsed_settings(
        rendered, deployment, deployment["spec"]["template"]["spec"]["containers"][0], tmp_path
    )
    triggers = scaled["spec"]["triggers"]
    assert {trigger["type"] for trigger in triggers} == {"nats-jetstream"}
    assert {trigger["metadata"]["consumer"] for trigger in triggers} == {
        worker.DURABLE,
        worker.ENRICH_DURABLE,
    }
    assert {trigger["metadata"]["stream"] for trigger in triggers} == {settings.nats.stream}


def test_production_does_not_render_without_its_secrets() -> None:
    with (
        K8S_CHECK.scratch_copy(with_secrets=False) as copy_dir,
        pytest.raises(K8S_CHECK.CheckFailed, match="secrets/"),
    ):
        K8S_CHECK.render_directory(copy_dir / "overlays" / "production")
