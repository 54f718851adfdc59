"""FILESTORE_FILER_GRPC turns the SeaweedFS bridge on, FILESTORE_BRIDGE_SOURCE chooses another; a malformed
or incomplete choice stops the processor at start."""

from __future__ import annotations

import pytest

from filestore.core.env import Env, SettingsError
from filestore.processor.settings import BridgeSource, ProcessorSettings

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


def test_filer_address_defaults_to_the_seaweedfs_bridge() -> None:
    settings = ProcessorSettings.from_env(Env({**BASE, "FILESTORE_FILER_GRPC": "127.0.0.1:18888"}))
    assert settings.bridge.source is BridgeSource.SEAWEEDFS
    assert ProcessorSettings.from_env(Env(BASE)).bridge.source is None


def test_another_source_turns_the_seaweedfs_bridge_off() -> None:
    env = {
        **BASE,
        "FILESTORE_FILER_GRPC": "127.0.0.1:18888",
        "FILESTORE_BRIDGE_SOURCE": "minio",
        "FILESTORE_BRIDGE_SUBJECT": "minio.events",
        "FILESTORE_BRIDGE_STREAM": "MINIO",
    }
    bridge = ProcessorSettings.from_env(Env(env)).bridge
    assert (bridge.source, bridge.subject, bridge.stream) == (BridgeSource.MINIO, "minio.events", "MINIO")
    off = ProcessorSettings.from_env(
        Env({**BASE, "FILESTORE_FILER_GRPC": "127.0.0.1:1", "FILESTORE_BRIDGE_SOURCE": "none"})
    )
    assert off.bridge.source is None


def test_aws_s3_from_sqs_takes_the_s3_region_by_default() -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/111122223333/filestore-events"
    env = {
        **BASE,
        "FILESTORE_S3_REGION": "eu-west-1",
        "FILESTORE_BRIDGE_SOURCE": "aws-s3",
        "FILESTORE_BRIDGE_SQS_QUEUE_URL": url,
    }
    bridge = ProcessorSettings.from_env(Env(env)).bridge
    assert (bridge.source, bridge.sqs_queue_url, bridge.sqs_region, bridge.subject) == (
        BridgeSource.AWS_S3,
        url,
        "eu-west-1",
        None,
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"FILESTORE_BRIDGE_SOURCE": "kafka"}, "FILESTORE_BRIDGE_SOURCE"),
        ({"FILESTORE_BRIDGE_SOURCE": "seaweedfs"}, "FILESTORE_FILER_GRPC"),
        ({"FILESTORE_BRIDGE_SOURCE": "minio"}, "FILESTORE_BRIDGE_SUBJECT"),
        (
            {"FILESTORE_BRIDGE_SOURCE": "minio", "FILESTORE_BRIDGE_SQS_QUEUE_URL": "https://sqs.example/1/q"},
            "FILESTORE_BRIDGE_SQS_QUEUE_URL",
        ),
        (
            {
                "FILESTORE_BRIDGE_SOURCE": "aws-s3",
                "FILESTORE_BRIDGE_SUBJECT": "relay.s3",
                "FILESTORE_BRIDGE_SQS_QUEUE_URL": "https://sqs.example/1/q",
            },
            "one of them",
        ),
        (
            {
                "FILESTORE_BRIDGE_SOURCE": "minio",
                "FILESTORE_BRIDGE_STREAM": "MINIO",
                "FILESTORE_BRIDGE_SQS_QUEUE_URL": "",
            },
            "FILESTORE_BRIDGE_SUBJECT",
        ),
        ({"FILESTORE_BRIDGE_SOURCE": "minio", "FILESTORE_BRIDGE_SUBJECT": "files.minio"}, "files.>"),
        ({"FILESTORE_BRIDGE_SOURCE": "minio", "FILESTORE_BRIDGE_SUBJECT": ">"}, "files.>"),
        (
            {"FILESTORE_BRIDGE_SOURCE": "aws-s3", "FILESTORE_BRIDGE_SQS_QUEUE_URL": "not a url"},
            "FILESTORE_BRIDGE_SQS_QUEUE_URL",
        ),
    ],
)
def test_incomplete_or_conflicting_bridge_settings_stop_the_processor(
    extra: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named.replace(".", r"\.").replace(">", ">")):
        ProcessorSettings.from_env(Env({**BASE, **extra}))


def test_subjects_beside_filestores_own_are_accepted() -> None:
    for subject in ("minio.events", "filesystem.events", "files"):
        env = {**BASE, "FILESTORE_BRIDGE_SOURCE": "minio", "FILESTORE_BRIDGE_SUBJECT": subject}
        assert ProcessorSettings.from_env(Env(env)).bridge.subject == subject
