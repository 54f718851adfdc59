from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from filestore.stack import (
    ALL_COMPONENTS,
    StackConfig,
    StackConfigError,
    StackPorts,
    port_env_var,
)
from filestore.stack.config import ADMIN_GRPC_OFFSET


def test_defaults_avoid_the_system_nats_and_are_distinct() -> None:
    ports = dict(StackPorts().items())
    assert 4222 not in ports.values()
    assert len(set(ports.values())) == len(ports)
    assert ports["admin_grpc"] == ports["admin"] + ADMIN_GRPC_OFFSET


def test_ports_from_env_override_each_default() -> None:
    env = {port_env_var(f.name): str(40000 + i) for i, f in enumerate(fields(StackPorts))}
    ports = StackPorts.from_env(env)
    assert ports.s3 == int(env["FILESTORE_STACK_S3_PORT"])
    assert ports.nats_monitor == int(env["FILESTORE_STACK_NATS_MONITOR_PORT"])
    assert ports.metadata == int(env["FILESTORE_STACK_METADATA_PORT"])


def test_malformed_port_names_the_variable() -> None:
    with pytest.raises(StackConfigError, match="FILESTORE_STACK_S3_PORT='abc' is not a port number"):
        StackPorts.from_env({"FILESTORE_STACK_S3_PORT": "abc"})
    with pytest.raises(StackConfigError, match="FILESTORE_STACK_NATS_PORT: port 70000 is outside"):
        StackPorts.from_env({"FILESTORE_STACK_NATS_PORT": "70000"})


def test_two_components_on_one_port_is_a_config_error() -> None:
    with pytest.raises(StackConfigError, match="both 8333"):
        StackPorts(upload=8333)


def test_free_ports_are_distinct_and_leave_room_for_admin_grpc() -> None:
    ports = StackPorts.free()
    values = [port for _, port in ports.items()]
    assert len(set(values)) == len(values)
    assert ports.admin_grpc <= 65535


def test_from_env_resolves_home_and_database(tmp_path: Path) -> None:
    config = StackConfig.from_env({}, cwd=tmp_path)
    assert config.home == tmp_path / ".filestore"
    assert config.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/.filestore/metadata.db"
    assert config.components == ALL_COMPONENTS

    pg = "postgresql+asyncpg://u:p@127.0.0.1:5432/db"
    config = StackConfig.from_env(
        {
            "FILESTORE_HOME": "state",
            "FILESTORE_DATABASE_URL": pg,
            "FILESTORE_STACK_COMPONENTS": "metadata, nats",
        },
        cwd=tmp_path,
    )
    assert config.home == tmp_path / "state"
    assert config.resolved_database_url == pg
    assert config.components == ("nats", "metadata")  # always in start order


def test_from_env_names_the_clamd_to_run(tmp_path: Path) -> None:
    assert StackConfig.from_env({}, cwd=tmp_path).clamd_executable == "clamd"
    config = StackConfig.from_env({"FILESTORE_STACK_CLAMD": "/opt/clamav/sbin/clamd"}, cwd=tmp_path)
    assert config.clamd_executable == "/opt/clamav/sbin/clamd"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FILESTORE_STACK_COMPONENTS": "redis"}, "FILESTORE_STACK_COMPONENTS names unknown component"),
        ({"FILESTORE_LOG_LEVEL": "loud"}, "FILESTORE_LOG_LEVEL='loud'"),
        ({"FILESTORE_STACK_BUCKET": "Bad_Bucket"}, "FILESTORE_STACK_BUCKET='Bad_Bucket'"),
    ],
)
def test_from_env_errors_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(StackConfigError, match=message):
        StackConfig.from_env(env, cwd=tmp_path)


def test_commands_may_only_replace_services(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match="only replace a service"):
        StackConfig(home=tmp_path, commands={"nats": ["true"]})


def test_tls_is_off_by_default_and_asked_for_by_filestore_stack_tls(tmp_path: Path) -> None:
    assert StackConfig.from_env({}, cwd=tmp_path).tls is False
    config = StackConfig.from_env(
        {"FILESTORE_STACK_TLS": "1", "FILESTORE_STACK_TLS_NAMES": "files.lan, 10.0.0.5"}, cwd=tmp_path
    )
    assert (config.tls, config.tls_names) == (True, ("files.lan", "10.0.0.5"))
    assert config.paths.tls == tmp_path / ".filestore" / "tls"
    with pytest.raises(StackConfigError, match="FILESTORE_STACK_TLS"):
        StackConfig.from_env({"FILESTORE_STACK_TLS": "maybe"}, cwd=tmp_path)
