"""FILESTORE_FILER_GRPC turns the bridge on; a malformed value stops the processor at start."""

from __future__ import annotations

import pytest

from filestore.core.env import Env, SettingsError
from filestore.processor.settings import ProcessorSettings

BASE = {
    "FILESTORE_AUTH_SECRET": "x" * 40,
    "FILESTORE_S3_ENDPOINT": "http://127.0.0.1:8333",
    "FILESTORE_S3_ACCESS_KEY": "key",
    "FILESTORE_S3_SECRET_KEY": "secret",
    "FILESTORE_NATS_URL": "nats://127.0.0.1:4222",
}


def test_bridge_is_off_without_a_filer_address() -> None:
    assert ProcessorSettings.from_env(Env(BASE)).filer_grpc is None


def test_filer_address_is_read() -> None:
    settings = ProcessorSettings.from_env(Env({**BASE, "FILESTORE_FILER_GRPC": "127.0.0.1:18888"}))
    assert settings.filer_grpc == "127.0.0.1:18888"


def test_malformed_filer_address_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="FILESTORE_FILER_GRPC"):
        ProcessorSettings.from_env(Env({**BASE, "FILESTORE_FILER_GRPC": "no-port"}))
