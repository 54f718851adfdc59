from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from filestore.core.env import Env, SettingsError
from filestore.server.settings import GrpcServerSettings, NatsSettings, S3Settings
from filestore.server.storage import StoreSet


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


_S3 = {
    "FILESTORE_S3_ENDPOINT": "http://storage:8333",
    "FILESTORE_S3_ACCESS_KEY": "k",
    "FILESTORE_S3_SECRET_KEY": "s",
}
_EU = {
    "name": "eu",
    "region": "eu-west-1",
    "endpoint": "http://eu:8333",
    "bucket": "files-eu",
    "access_key": "ek",
    "secret_key": "the-eu-secret",
    "part_copy": True,
}


def _stores(**extra: str) -> StoreSet:
    env = Env({**_S3, **extra})
    return StoreSet.from_env(env, S3Settings.from_env(env))


def test_one_store_without_filestore_stores_is_named_default() -> None:
    stores = _stores()
    assert stores.names == ("default",)
    assert stores.default == "default"


def test_filestore_stores_adds_stores_inline_or_from_a_file(tmp_path: Path) -> None:
    inline = _stores(FILESTORE_STORES=json.dumps([_EU]), FILESTORE_DEFAULT_STORE="eu")
    assert inline.names == ("default", "eu")
    assert inline.default == "eu"
    eu = inline.get("eu")
    assert eu is not None
    assert (eu.public_endpoint, eu.bucket, eu.region, eu.part_copy) == (
        "http://eu:8333",
        "files-eu",
        "eu-west-1",
        True,
    )
    assert eu.storage_classes == ("STANDARD",)
    assert "the-eu-secret" not in repr(eu)
    path = tmp_path / "stores.json"
    path.write_text(json.dumps([_EU]), encoding="utf-8")
    assert _stores(FILESTORE_STORES=f"@{path}").get("eu") == eu


@pytest.mark.parametrize(
    ("stores", "default", "message"),
    [
        ("not json", "default", "is not JSON"),
        (json.dumps({"name": "eu"}), "default", "must be a JSON list"),
        (json.dumps([{**_EU, "name": "EU!"}]), "default", "store name 'EU!'"),
        (json.dumps([{**_EU, "colour": "red"}]), "default", "unknown field"),
        (json.dumps([{**_EU, "endpoint": "ftp://eu"}]), "default", "must be an http"),
        (json.dumps([_EU, _EU]), "default", "names a store twice"),
        (json.dumps([{**_EU, "name": "default"}]), "default", "names a store twice"),
        (json.dumps([_EU]), "mars", "FILESTORE_DEFAULT_STORE='mars' is not a configured store"),
    ],
)
def test_malformed_stores_stop_the_service_with_one_line(stores: str, default: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        _stores(FILESTORE_STORES=stores, FILESTORE_DEFAULT_STORE=default)
