"""The storage-event bridge a processor runs, chosen by ``FILESTORE_BRIDGE_SOURCE`` (see
:class:`~filestore.processor.settings.BridgeSettings`)."""

from __future__ import annotations

from typing import Protocol

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from filestore.processor.bridge.nats_sources import GROUP, CoreNatsSource, JetStreamSource
from filestore.processor.bridge.normalize import from_aws, from_minio
from filestore.processor.bridge.notifications import Normalizer, NotificationBridge, NotificationSource
from filestore.processor.bridge.seaweedfs import SeaweedBridge
from filestore.processor.bridge.sqs import Boto3SqsQueue, SqsSource, queue_subject
from filestore.processor.settings import BridgeSource, ProcessorSettings

__all__ = ["Bridge", "storage_bridge"]


class Bridge(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


_NORMALIZERS: dict[BridgeSource, Normalizer] = {
    BridgeSource.MINIO: from_minio,
    BridgeSource.AWS_S3: from_aws,
}


def storage_bridge(
    settings: ProcessorSettings, *, nats_client: NatsClient, jetstream: JetStreamContext
) -> Bridge | None:
    """The bridge ``settings`` ask for, not started; None when they ask for none."""
    bridge = settings.bridge
    if bridge.source is None:
        return None
    if bridge.source is BridgeSource.SEAWEEDFS:
        assert settings.filer_grpc is not None, "BridgeSettings checks it"
        return SeaweedBridge(
            filer_address=settings.filer_grpc,
            bucket=settings.s3.bucket,
            jetstream=jetstream,
            subject_prefix=settings.nats.subject_prefix,
            lease_ttl_s=settings.bridge_lease_ttl_s,
            replicas=settings.nats.replicas,
        )
    source: NotificationSource
    if bridge.sqs_queue_url is not None:
        queue = Boto3SqsQueue(
            bridge.sqs_queue_url, region=bridge.sqs_region or settings.s3.region, endpoint=bridge.sqs_endpoint
        )
        source = SqsSource(queue, origin=queue_subject(bridge.sqs_queue_url))
    elif bridge.stream is not None:
        assert bridge.subject is not None, "BridgeSettings checks it"
        source = JetStreamSource(
            jetstream, stream=bridge.stream, subject=bridge.subject, durable=f"{GROUP}-{bridge.source.value}"
        )
    else:
        assert bridge.subject is not None, "BridgeSettings checks it"
        source = CoreNatsSource(nats_client, subject=bridge.subject)
    return NotificationBridge(
        source=source,
        normalize=_NORMALIZERS[bridge.source],
        bucket=settings.s3.bucket,
        jetstream=jetstream,
        subject_prefix=settings.nats.subject_prefix,
        name=bridge.source.value,
    )
