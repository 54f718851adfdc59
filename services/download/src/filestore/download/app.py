"""Builds the download signer."""

from __future__ import annotations

import grpc

from filestore.core import s3
from filestore.core.auth import ServiceIdentity, TokenVerifier
from filestore.core.clients import insecure_channel
from filestore.core.server import ServerHandle, create_server
from filestore.download.servicer import DownloadServicer
from filestore.download.settings import DownloadSettings
from filestore.v1 import download_service_pb2, download_service_pb2_grpc, metadata_service_pb2_grpc

DOMAIN = "download.filestore.v1"


async def build(settings: DownloadSettings) -> ServerHandle:
    identity = ServiceIdentity(settings.auth.secret, service="download")
    channel = insecure_channel(settings.metadata_address, token=identity.token)
    servicer = DownloadServicer(
        settings,
        metadata=metadata_service_pb2_grpc.MetadataServiceStub(channel),
        presigner=s3.presigning_client(settings.s3),
    )

    def register(server: grpc.aio.Server) -> list[str]:
        download_service_pb2_grpc.add_DownloadServiceServicer_to_server(servicer, server)
        return [download_service_pb2.DESCRIPTOR.services_by_name["DownloadService"].full_name]

    handle = create_server(
        listen=settings.server.listen,
        domain=DOMAIN,
        verifier=TokenVerifier(settings.auth.secret),
        register=register,
    )
    handle.on_shutdown.append(channel.close)
    return handle
