"""Builds the download signer."""

from __future__ import annotations

import grpc

from filestore.core.auth import ServiceIdentity
from filestore.download.cdn import CdnUrls, CloudFrontUrls, NginxSecureLinkUrls, UnsignedCdnUrls
from filestore.download.servicer import DownloadServicer
from filestore.download.settings import CdnSettings, DownloadSettings
from filestore.server import events
from filestore.server.bootstrap import ServerHandle, create_server
from filestore.server.dependencies import METADATA, dependency_channel
from filestore.server.storage import DEFAULT_STORE, ObjectStore
from filestore.v1 import download_service_pb2, download_service_pb2_grpc, metadata_service_pb2_grpc

DOMAIN = "download.filestore.v1"


def cdn_urls(settings: CdnSettings | None) -> CdnUrls | None:
    if settings is None:
        return None
    if settings.signing == "nginx":
        return NginxSecureLinkUrls(settings.base_url, settings.nginx_secret)
    if settings.signing.startswith("cloudfront") and settings.cloudfront_private_key_file is not None:
        return CloudFrontUrls(
            settings.base_url,
            key_pair_id=settings.cloudfront_key_pair_id,
            private_key_file=settings.cloudfront_private_key_file,
            custom_policy=settings.signing == "cloudfront-custom",
        )
    return UnsignedCdnUrls(settings.base_url)


async def build(settings: DownloadSettings) -> ServerHandle:
    identity = ServiceIdentity(settings.auth.secret, service="download")
    channel = dependency_channel(
        settings.metadata_address,
        token=identity.token,
        tls=settings.server.tls,
        dependency=METADATA,
        timeout_s=settings.metadata_timeout_s,
    )
    nats_client = None
    jetstream = None
    if settings.nats is not None:
        nats_client = await events.connect(settings.nats, name="filestore-download")
        jetstream = nats_client.jetstream()
        await events.ensure_stream(jetstream, settings.nats)
    stores = {config.name: ObjectStore(config) for config in settings.stores}
    servicer = DownloadServicer(
        settings,
        metadata=metadata_service_pb2_grpc.MetadataServiceStub(channel),
        store=stores[DEFAULT_STORE],
        jetstream=jetstream,
        cdn=cdn_urls(settings.cdn),
        stores=stores,
    )

    def register(server: grpc.aio.Server) -> list[str]:
        download_service_pb2_grpc.add_DownloadServiceServicer_to_server(servicer, server)
        return [download_service_pb2.DESCRIPTOR.services_by_name["DownloadService"].full_name]

    handle = create_server(
        listen=settings.server.listen,
        domain=DOMAIN,
        verifier=settings.auth.token_verifier(),
        tls=settings.server.tls,
        register=register,
    )
    if nats_client is not None:
        handle.on_shutdown.append(nats_client.drain)
    handle.on_shutdown.append(channel.close)
    return handle
