"""Builds the metadata service: engine, migrations, servicer."""

from __future__ import annotations

import grpc

from filestore.metadata.db.engine import create_engine, session_factory
from filestore.metadata.db.migrate import upgrade_to_head
from filestore.metadata.janitor import EveryStore, ObjectJanitor
from filestore.metadata.servicer import MetadataServicer
from filestore.metadata.settings import MetadataSettings
from filestore.server.bootstrap import ServerHandle, create_server
from filestore.server.storage import ObjectStore
from filestore.v1 import metadata_service_pb2, metadata_service_pb2_grpc

DOMAIN = "metadata.filestore.v1"


async def build(settings: MetadataSettings) -> ServerHandle:
    if settings.migrate_on_start:
        await upgrade_to_head(settings.database_url)
    engine = create_engine(settings.database_url)
    if settings.s3 is None or settings.stores is None:
        janitor = ObjectJanitor(None, wait_s=0.0)
    else:
        janitor = ObjectJanitor(
            EveryStore([ObjectStore(config) for config in settings.stores]),
            wait_s=settings.s3.control_timeout_s,
        )
    servicer = MetadataServicer(
        session_factory(engine),
        objects=janitor,
        page_token_secret=settings.auth.secret,
        stores=settings.stores,
    )

    def register(server: grpc.aio.Server) -> list[str]:
        metadata_service_pb2_grpc.add_MetadataServiceServicer_to_server(servicer, server)
        return [metadata_service_pb2.DESCRIPTOR.services_by_name["MetadataService"].full_name]

    handle = create_server(
        listen=settings.server.listen,
        domain=DOMAIN,
        verifier=settings.auth.token_verifier(),
        tls=settings.server.tls,
        register=register,
    )
    handle.on_shutdown.append(engine.dispose)
    handle.on_shutdown.append(janitor.close)
    return handle
