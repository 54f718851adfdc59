from __future__ import annotations

import subprocess
import sys

import pytest

from filestore.core.env import Env, SettingsError
from filestore.server.settings import GrpcServerSettings, NatsSettings, S3Settings


def test_missing_required_variable_names_it() -> None:
    with pytest.raises(SettingsError, match="FILESTORE_S3_ACCESS_KEY is required"):
        S3Settings.from_env(Env({"FILESTORE_S3_ENDPOINT": "http://127.0.0.1:1"}))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FILESTORE_LISTEN", "nohost", "FILESTORE_LISTEN='nohost' is not a valid address"),
        ("FILESTORE_LISTEN", "127.0.0.1:99999", "is not a valid address"),
        ("FILESTORE_SHUTDOWN_GRACE_S", "soon", "FILESTORE_SHUTDOWN_GRACE_S='soon' is not a valid number"),
        ("FILESTORE_LOG_LEVEL", "loud", "FILESTORE_LOG_LEVEL='loud' is not one of"),
    ],
)
def test_malformed_values_are_refused_with_the_variable_name(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        GrpcServerSettings.from_env(Env({name: value}), default_listen="127.0.0.1:1")


def test_defaults_and_parsing() -> None:
    settings = S3Settings.from_env(
        Env(
            {
                "FILESTORE_S3_ENDPOINT": "http://storage:8333",
                "FILESTORE_S3_ACCESS_KEY": "k",
                "FILESTORE_S3_SECRET_KEY": "s",
            }
        )
    )
    assert settings.public_endpoint == "http://storage:8333"
    assert settings.bucket == "filestore"
    with pytest.raises(AttributeError):
        settings.bucket = "other"  # type: ignore[misc]


def test_a_service_with_bad_configuration_exits_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "filestore.upload"],
        env={"FILESTORE_AUTH_SECRET": "x" * 40, "FILESTORE_S3_ENDPOINT": "ftp://nope", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "filestore-upload: configuration error: FILESTORE_S3_ENDPOINT='ftp://nope' is not a valid URL "
        "(scheme must be one of http, https)"
    ]


def test_nats_servers_are_a_comma_list_and_replicas_a_setting() -> None:
    settings = NatsSettings.from_env(
        Env(
            {
                "FILESTORE_NATS_URL": "nats://a:4222, nats://b:4222,nats://c:4222",
                "FILESTORE_NATS_REPLICAS": "3",
            }
        )
    )
    assert settings.urls == ("nats://a:4222", "nats://b:4222", "nats://c:4222")
    assert settings.replicas == 3
    assert NatsSettings.from_env(Env({"FILESTORE_NATS_URL": "nats://a:4222"})).replicas == 1


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FILESTORE_NATS_URL": "nats://a:4222,http://b:80"}, "http://b:80' is not a valid URL"),
        ({"FILESTORE_NATS_URL": " , "}, "FILESTORE_NATS_URL is required"),
        ({"FILESTORE_NATS_URL": "nats://a:4222", "FILESTORE_NATS_REPLICAS": "7"}, "must be <= 5"),
    ],
)
def test_malformed_nats_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        NatsSettings.from_env(Env(environ))
