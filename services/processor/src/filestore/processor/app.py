"""Builds the processor: the ProcessorService server and the pipeline worker in one process."""

from __future__ import annotations

import grpc

from filestore.core.auth import ServiceIdentity
from filestore.processor.bridge.modes import storage_bridge
from filestore.processor.lifecycle import LifecycleJob, LifecycleScheduler
from filestore.processor.pipeline import Pipeline
from filestore.processor.replication import Replicator
from filestore.processor.servicer import ProcessorServicer
from filestore.processor.settings import ProcessorSettings
from filestore.processor.worker import Worker
from filestore.server import events
from filestore.server.bootstrap import ServerHandle, create_server
from filestore.server.dependencies import METADATA, dependency_channel
from filestore.server.storage import DEFAULT_STORE, ObjectStore
from filestore.v1 import metadata_service_pb2_grpc, processor_service_pb2, processor_service_pb2_grpc

DOMAIN = "processor.filestore.v1"


async def build(settings: ProcessorSettings) -> ServerHandle:
    identity = ServiceIdentity(settings.auth.secret, service="processor")
    channel = dependency_channel(
        settings.metadata_address,
        token=identity.token,
        tls=settings.server.tls,
        dependency=METADATA,
        timeout_s=settings.metadata_timeout_s,
    )
    metadata = metadata_service_pb2_grpc.MetadataServiceStub(channel)
    nats_client = await events.connect(settings.nats, name="filestore-processor")
    jetstream = nats_client.jetstream()
    await events.ensure_stream(jetstream, settings.nats)
    stores = {config.name: ObjectStore(config) for config in settings.stores}
    pipeline = Pipeline(
        settings,
        metadata=metadata,
        store=stores[DEFAULT_STORE],
        jetstream=jetstream,
        stores=stores,
        replicator=Replicator(metadata, stores),
    )
    worker = Worker(settings, jetstream=jetstream, pipeline=pipeline)
    lifecycle = LifecycleJob(
        metadata, stores, jetstream, subjects=events.Subjects(settings.nats.subject_prefix)
    )
    servicer = ProcessorServicer(
        metadata=metadata,
        jetstream=jetstream,
        nats=settings.nats,
        page_token_secret=settings.auth.secret,
        lifecycle=lifecycle,
    )

    def register(server: grpc.aio.Server) -> list[str]:
        processor_service_pb2_grpc.add_ProcessorServiceServicer_to_server(servicer, server)
        return [processor_service_pb2.DESCRIPTOR.services_by_name["ProcessorService"].full_name]

    handle = create_server(
        listen=settings.server.listen,
        domain=DOMAIN,
        verifier=settings.auth.token_verifier(),
        tls=settings.server.tls,
        register=register,
    )
    await worker.start()
    if settings.lifecycle_interval_s > 0:
        scheduler = LifecycleScheduler(lifecycle, interval_s=settings.lifecycle_interval_s)
        scheduler.start()
        handle.on_shutdown.append(scheduler.stop)
    # Shutdown runs these in reverse: stop the worker, then drain NATS, then close the channel.
    handle.on_shutdown.append(channel.close)
    handle.on_shutdown.append(nats_client.drain)
    handle.on_shutdown.append(worker.stop)
    bridge = storage_bridge(settings, nats_client=nats_client, jetstream=jetstream)
    if bridge is not None:
        await bridge.start()
        # Runs first at shutdown: the bridge saves its cursor (or settles the notification in hand)
        # while NATS is still connected.
        handle.on_shutdown.append(bridge.stop)
    return handle
