"""Processor configuration (environment variables, read once at start)."""

from __future__ import annotations

from dataclasses import dataclass, field

from filestore.core.env import PREFIX, Env
from filestore.processor.pipeline_config import PipelineSettings
from filestore.server.settings import (
    DEFAULT_CALL_TIMEOUT_S,
    AuthSettings,
    GrpcServerSettings,
    NatsSettings,
    S3Settings,
    metadata_timeout_from_env,
)
from filestore.server.storage import StoreSet


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorSettings:
    server: GrpcServerSettings
    auth: AuthSettings
    s3: S3Settings
    #: Every store: ``s3``'s (named ``default``) and ``FILESTORE_STORES``' (see
    #: :class:`filestore.server.storage.StoreSet`); only ``s3``'s when not given.
    store_set: StoreSet | None = None
    nats: NatsSettings
    metadata_address: str
    #: Deadline of a call to the metadata service (less when the RPC being served has less time left).
    metadata_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    #: Files taken towards READY at once by this process.
    concurrency: int
    #: READY files whose optional steps (thumbnails, OCR) run at once; a queue of their own, so
    #: slow renders never keep another file from becoming READY.
    enrich_concurrency: int
    #: Deliveries of one event before it is dead-lettered and its file marked FAILED.
    max_deliver: int
    #: How long a delivery may go without an ack or a heartbeat before JetStream redelivers it.
    ack_wait_s: float
    #: Bytes read from storage at a time while streaming; bounds the worker's memory per event.
    read_chunk_bytes: int
    #: SeaweedFS filer gRPC address: when set, this process also runs the storage-event bridge.
    filer_grpc: str | None = None
    #: Steps per content type, which gate READY, scanner address and rendering limits.
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    @property
    def stores(self) -> StoreSet:
        return self.store_set if self.store_set is not None else StoreSet.single(self.s3)

    @classmethod
    def from_env(cls, env: Env | None = None) -> ProcessorSettings:
        env = env or Env()
        return cls(
            server=GrpcServerSettings.from_env(env, default_listen="127.0.0.1:50053"),
            auth=AuthSettings.from_env(env),
            s3=S3Settings.from_env(env),
            store_set=StoreSet.from_env(env, S3Settings.from_env(env)),
            nats=NatsSettings.from_env(env),
            metadata_address=env.address(f"{PREFIX}METADATA_ADDR", "127.0.0.1:50051"),
            metadata_timeout_s=metadata_timeout_from_env(env),
            concurrency=env.integer(f"{PREFIX}WORKER_CONCURRENCY", 4, minimum=1, maximum=256),
            enrich_concurrency=env.integer(f"{PREFIX}WORKER_ENRICH_CONCURRENCY", 2, minimum=1, maximum=256),
            max_deliver=env.integer(f"{PREFIX}WORKER_MAX_DELIVER", 5, minimum=1, maximum=100),
            ack_wait_s=env.number(f"{PREFIX}WORKER_ACK_WAIT_S", 30.0, minimum=1.0),
            read_chunk_bytes=env.integer(
                f"{PREFIX}READ_CHUNK_BYTES", 1024 * 1024, minimum=64 * 1024, maximum=64 * 1024 * 1024
            ),
            pipeline=PipelineSettings.from_env(env),
            filer_grpc=(
                env.address(f"{PREFIX}FILER_GRPC") if env.optional_str(f"{PREFIX}FILER_GRPC") else None
            ),
        )
