"""Builds the upload broker: its dependencies are created once here and closed on shutdown."""

from __future__ import annotations

import asyncio

import grpc

from filestore.core import events, s3
from filestore.core.auth import ServiceIdentity, TokenVerifier
from filestore.core.clients import insecure_channel
from filestore.core.server import ServerHandle, create_server
from filestore.upload.servicer import UploadServicer
from filestore.upload.settings import UploadSettings
from filestore.v1 import metadata_service_pb2_grpc, upload_service_pb2, upload_service_pb2_grpc

DOMAIN = "upload.filestore.v1"


async def build(settings: UploadSettings) -> ServerHandle:
    identity = ServiceIdentity(settings.auth.secret, service="upload")
    channel = insecure_channel(settings.metadata_address, token=identity.token)
    nats_client = await events.connect(settings.nats, name="filestore-upload")
    jetstream = nats_client.jetstream()
    await events.ensure_stream(jetstream, settings.nats)
    storage = s3.storage_client(settings.s3)
    await asyncio.to_thread(storage.head_bucket, Bucket=settings.s3.bucket)
    servicer = UploadServicer(
        settings,
        metadata=metadata_service_pb2_grpc.MetadataServiceStub(channel),
        storage=storage,
        presigner=s3.presigning_client(settings.s3),
        jetstream=jetstream,
    )

    def register(server: grpc.aio.Server) -> list[str]:
        upload_service_pb2_grpc.add_UploadServiceServicer_to_server(servicer, server)
        return [upload_service_pb2.DESCRIPTOR.services_by_name["UploadService"].full_name]

    handle = create_server(
        listen=settings.server.listen,
        domain=DOMAIN,
        verifier=TokenVerifier(settings.auth.secret),
        register=register,
    )
    handle.on_shutdown.append(nats_client.drain)
    handle.on_shutdown.append(channel.close)
    return handle
