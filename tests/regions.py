"""A stack with two stores in two regions (FILESTORE_STACK_REGIONS=2), shared by the modules that test
placement, replication and lifecycle across stores: the stack itself, each store's bucket as its
administrator sees it, and the reconciler as an operator runs it over both."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import boto3
from botocore.config import Config

from filestore.metadata.fsck.scan import FsckOptions
from filestore.server.storage import StoreConfig, StoreSet
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.stack.regions import SECOND_STORE

DEFAULT = "default"


@asynccontextmanager
async def two_region_stack(home: Path) -> AsyncIterator[Stack]:
    """The services with two SeaweedFS stores (``default`` and SECOND_STORE), on SQLite; no browser
    face, no demo page: the services and storage are what these modules test."""
    config = StackConfig(
        home=home,
        ports=StackPorts.free(),
        ready_timeout_s=60.0,
        regions=2,
        components=("seaweedfs", "nats", "clamd", "metadata", "upload", "processor", "download"),
    )
    async with Stack(config) as stack:
        yield stack


def storage_of(stack: Stack, store: str) -> tuple[object, str]:
    """A bare boto3 client with the administrator's keys of ``store``'s SeaweedFS, and its bucket."""
    region = stack if store == DEFAULT else stack.regions[0]
    settings = region.endpoints.admin_s3_settings()
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=Config(region_name=settings.region, signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    return client, settings.bucket


def reconciler_options(stack: Stack, tenant: str) -> FsckOptions:
    """The reconciler as an operator runs it: the administrator's keys of both stores."""
    home = stack.endpoints.admin_s3_settings()
    second = stack.regions[0].endpoints.admin_s3_settings()
    stores = StoreSet(
        (
            StoreConfig.from_settings(home),
            dataclasses.replace(StoreConfig.from_settings(second), name=SECOND_STORE),
        )
    )
    return FsckOptions(
        database_url=stack.endpoints.database_url,
        s3=home,
        stores=stores,
        repair=True,
        grace=timedelta(0),
        tenants=(tenant,),
    )
