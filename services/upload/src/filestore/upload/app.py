"""Builds the upload broker: its dependencies are created once here and closed on shutdown."""

from __future__ import annotations

import asyncio

import grpc
import structlog

from filestore.core.auth import ServiceIdentity
from filestore.server import events
from filestore.server.bootstrap import ServerHandle, create_server
from filestore.server.dependencies import METADATA, dependency_channel
from filestore.server.storage import DEFAULT_STORE, ObjectStore
from filestore.upload.reaper import Reaper
from filestore.upload.servicer import UploadServicer
from filestore.upload.settings import UploadSettings
from filestore.v1 import metadata_service_pb2_grpc, upload_service_pb2, upload_service_pb2_grpc

DOMAIN = "upload.filestore.v1"

log = structlog.get_logger("filestore.upload")


async def build(settings: UploadSettings) -> ServerHandle:
    identity = ServiceIdentity(settings.auth.secret, service="upload")
    channel = dependency_channel(
        settings.metadata_address,
        token=identity.token,
        tls=settings.server.tls,
        dependency=METADATA,
        timeout_s=settings.metadata_timeout_s,
    )
    nats_client = await events.connect(settings.nats, name="filestore-upload")
    jetstream = nats_client.jetstream()
    await events.ensure_stream(jetstream, settings.nats)
    stores = {config.name: ObjectStore(config) for config in settings.stores}
    for each in stores.values():
        await each.check_bucket()
        # The broker owns the buckets' CORS rules: applied at every start, so the settings are the
        # single source of truth (an edit made by hand in storage is undone on the next start).
        if await each.apply_cors(settings.cors_origins):
            log.info("bucket_cors_applied", store=each.config.name, origins=list(settings.cors_origins))
        else:
            # Not fatal: uploads from services and the SDK need no CORS; browsers then depend on the
            # store's own server-wide CORS setting (docs/stores.md).
            log.warning(
                "bucket_cors_unsupported",
                store=each.config.name,
                origins=list(settings.cors_origins),
                detail="the store has no bucket CORS (NotImplemented): browsers need its server-wide CORS",
            )
    store = stores[DEFAULT_STORE]
    metadata = metadata_service_pb2_grpc.MetadataServiceStub(channel)
    servicer = UploadServicer(
        settings,
        metadata=metadata,
        store=store,
        jetstream=jetstream,
        stores=stores,
    )

    def register(server: grpc.aio.Server) -> list[str]:
        upload_service_pb2_grpc.add_UploadServiceServicer_to_server(servicer, server)
        return [upload_service_pb2.DESCRIPTOR.services_by_name["UploadService"].full_name]

    handle = create_server(
        listen=settings.server.listen,
        domain=DOMAIN,
        verifier=settings.auth.token_verifier(),
        tls=settings.server.tls,
        register=register,
    )
    if settings.reaper_interval_s > 0:
        reaper = Reaper(
            metadata=metadata,
            store=store,
            batch=settings.reaper_batch,
            lease_s=settings.reaper_lease_s,
            stores=stores,
        )
        task = asyncio.get_running_loop().create_task(reaper.run(settings.reaper_interval_s))

        async def stop_reaper() -> None:
            await Reaper.stop(task)

        # Registered last so it runs first: the reaper stops before the channel it uses closes.
        handle.on_shutdown.append(nats_client.drain)
        handle.on_shutdown.append(channel.close)
        handle.on_shutdown.append(stop_reaper)
    else:
        handle.on_shutdown.append(nats_client.drain)
        handle.on_shutdown.append(channel.close)
    return handle
