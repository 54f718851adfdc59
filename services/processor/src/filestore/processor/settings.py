"""Processor configuration (environment variables, read once at start)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from filestore.core.env import PREFIX, Env, SettingsError
from filestore.processor.bridge.seaweedfs import LEASE_TTL_S
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


class BridgeSource(StrEnum):
    """Where the storage-event bridge takes the store's notifications from."""

    #: The SeaweedFS filer's metadata subscription (FILESTORE_FILER_GRPC).
    SEAWEEDFS = "seaweedfs"
    #: MinIO's NATS target: the subject it publishes on (a stream's, with ``jetstream on``).
    MINIO = "minio"
    #: AWS S3's notifications: an SQS queue, or a NATS subject a relay publishes them on.
    AWS_S3 = "aws-s3"


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeSettings:
    """The storage-event bridge of this process: which source, and where it is.

    ``FILESTORE_BRIDGE_SOURCE`` is ``seaweedfs`` (the default when ``FILESTORE_FILER_GRPC`` is set),
    ``minio``, ``aws-s3`` or ``none`` (the default otherwise). ``minio`` takes
    ``FILESTORE_BRIDGE_SUBJECT``, the subject of MinIO's NATS target, and ``FILESTORE_BRIDGE_STREAM``
    when the target has ``jetstream on`` (the stream that holds the subject; consumed durably).
    ``aws-s3`` takes ``FILESTORE_BRIDGE_SQS_QUEUE_URL`` (region ``FILESTORE_BRIDGE_SQS_REGION``, by
    default the S3 region; ``FILESTORE_BRIDGE_SQS_ENDPOINT`` for an SQS-compatible service), or a NATS
    subject and stream as ``minio`` does, for deployments that relay SQS or EventBridge into NATS.
    """

    source: BridgeSource | None = None
    subject: str | None = None
    stream: str | None = None
    sqs_queue_url: str | None = None
    sqs_region: str | None = None
    sqs_endpoint: str | None = None

    @classmethod
    def from_env(
        cls, env: Env, *, filer_grpc: str | None, subject_prefix: str, s3_region: str
    ) -> BridgeSettings:
        name = f"{PREFIX}BRIDGE_SOURCE"
        raw = env.string(name, BridgeSource.SEAWEEDFS.value if filer_grpc else "none").lower()
        if raw == "none":
            return cls()
        try:
            source = BridgeSource(raw)
        except ValueError:
            known = ", ".join([*(s.value for s in BridgeSource), "none"])
            raise SettingsError(f"{name}={raw!r} is not one of {known}") from None
        subject = env.optional_str(f"{PREFIX}BRIDGE_SUBJECT")
        stream = env.optional_str(f"{PREFIX}BRIDGE_STREAM")
        queue_url = env.optional_str(f"{PREFIX}BRIDGE_SQS_QUEUE_URL")
        if queue_url is not None:
            env.url(f"{PREFIX}BRIDGE_SQS_QUEUE_URL", schemes=("https", "http"))
        endpoint = env.optional_str(f"{PREFIX}BRIDGE_SQS_ENDPOINT")
        if endpoint is not None:
            env.url(f"{PREFIX}BRIDGE_SQS_ENDPOINT", schemes=("https", "http"))
        if source is BridgeSource.SEAWEEDFS:
            if filer_grpc is None:
                raise SettingsError(f"{name}=seaweedfs needs {PREFIX}FILER_GRPC, the filer's gRPC address")
            return cls(source=source)
        if source is BridgeSource.MINIO and queue_url is not None:
            raise SettingsError(f"{PREFIX}BRIDGE_SQS_QUEUE_URL is for {name}=aws-s3; MinIO publishes to NATS")
        if (subject is None) == (queue_url is None):
            where = f"{PREFIX}BRIDGE_SUBJECT" + (
                f" or {PREFIX}BRIDGE_SQS_QUEUE_URL (one of them)" if source is BridgeSource.AWS_S3 else ""
            )
            raise SettingsError(f"{name}={source.value} needs {where}")
        if stream is not None and subject is None:
            raise SettingsError(f"{PREFIX}BRIDGE_STREAM needs {PREFIX}BRIDGE_SUBJECT, the subject it holds")
        if subject is not None and _overlaps(subject, f"{subject_prefix}.>"):
            # The FILES stream would keep the store's JSON beside Filestore's own events.
            raise SettingsError(
                f"{PREFIX}BRIDGE_SUBJECT={subject!r} lies under {subject_prefix}.>, Filestore's own subjects"
            )
        return cls(
            source=source,
            subject=subject,
            stream=stream,
            sqs_queue_url=queue_url,
            sqs_region=env.string(f"{PREFIX}BRIDGE_SQS_REGION", s3_region) if queue_url else None,
            sqs_endpoint=endpoint,
        )


def _overlaps(subject: str, pattern: str) -> bool:
    """Whether some subject matches both NATS subject filters (``*`` one token, ``>`` the rest)."""
    left, right = subject.split("."), pattern.split(".")
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if ">" in (a, b):
            return True
        if a != b and "*" not in (a, b):
            return False
        if index == min(len(left), len(right)) - 1:
            return len(left) == len(right)
    return False


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
    #: SeaweedFS filer gRPC address: when set, this process also runs the storage-event bridge
    #: (unless FILESTORE_BRIDGE_SOURCE chooses another source, or none).
    filer_grpc: str | None = None
    #: The storage-event bridge this process runs, if any.
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    #: How long the SeaweedFS bridge's lease outlives a holder that stops renewing it (a crash): the
    #: longest a crashed bridge keeps the others from following. Set when the lease bucket is created.
    bridge_lease_ttl_s: float = LEASE_TTL_S
    #: Seconds between runs of the lifecycle job in this process (0: never; ``filestore-lifecycle
    #: run`` runs it by hand). Several processors may run it: actions are leased to one.
    lifecycle_interval_s: float = 3600.0
    #: Steps per content type, which gate READY, scanner address and rendering limits.
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    @property
    def stores(self) -> StoreSet:
        return self.store_set if self.store_set is not None else StoreSet.single(self.s3)

    @classmethod
    def from_env(cls, env: Env | None = None) -> ProcessorSettings:
        env = env or Env()
        s3 = S3Settings.from_env(env)
        nats = NatsSettings.from_env(env)
        filer_grpc = env.address(f"{PREFIX}FILER_GRPC") if env.optional_str(f"{PREFIX}FILER_GRPC") else None
        return cls(
            server=GrpcServerSettings.from_env(env, default_listen="127.0.0.1:50053"),
            auth=AuthSettings.from_env(env),
            s3=s3,
            store_set=StoreSet.from_env(env, s3),
            nats=nats,
            metadata_address=env.service_address(f"{PREFIX}METADATA_ADDR", "127.0.0.1:50051"),
            metadata_timeout_s=metadata_timeout_from_env(env),
            concurrency=env.integer(f"{PREFIX}WORKER_CONCURRENCY", 4, minimum=1, maximum=256),
            enrich_concurrency=env.integer(f"{PREFIX}WORKER_ENRICH_CONCURRENCY", 2, minimum=1, maximum=256),
            max_deliver=env.integer(f"{PREFIX}WORKER_MAX_DELIVER", 5, minimum=1, maximum=100),
            ack_wait_s=env.number(f"{PREFIX}WORKER_ACK_WAIT_S", 30.0, minimum=1.0),
            read_chunk_bytes=env.integer(
                f"{PREFIX}READ_CHUNK_BYTES", 1024 * 1024, minimum=64 * 1024, maximum=64 * 1024 * 1024
            ),
            pipeline=PipelineSettings.from_env(env),
            bridge_lease_ttl_s=env.number(f"{PREFIX}BRIDGE_LEASE_TTL_S", LEASE_TTL_S, minimum=1.0),
            lifecycle_interval_s=env.number(f"{PREFIX}LIFECYCLE_INTERVAL_S", 3600.0, minimum=0.0),
            filer_grpc=filer_grpc,
            bridge=BridgeSettings.from_env(
                env, filer_grpc=filer_grpc, subject_prefix=nats.subject_prefix, s3_region=s3.region
            ),
        )
