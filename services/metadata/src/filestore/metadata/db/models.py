"""The metadata catalogue as SQLAlchemy 2.0 typed ORM classes.

The schema is portable between SQLite (the embedded default) and PostgreSQL (production): ids are
UUID4 text, enums are short strings guarded by CHECK constraints rather than native PostgreSQL enums,
and JSON columns use the generic ``JSON`` type. Every constraint gets a deterministic name from
``NAMING_CONVENTION`` so that migrations can refer to (and batch-alter) them on both databases.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from filestore.core.identity import SUBJECT_MAX_CHARS
from filestore.core.validation import MAX_CONTENT_TYPE_CHARS, MAX_NAME_CHARS

__all__ = [
    "ARCHIVE_STORAGE_CLASSES",
    "DEFAULT_STORE",
    "NAMING_CONVENTION",
    "READABLE_STORAGE_CLASS",
    "STORE_NAME_LENGTH",
    "Base",
    "Blob",
    "Derivative",
    "File",
    "FileColumns",
    "FileStatus",
    "FileValues",
    "Grant",
    "IdempotencyKey",
    "LifecycleAction",
    "LifecycleActionKind",
    "LifecycleActionState",
    "LifecycleRule",
    "PartChecksum",
    "Permission",
    "ProcessingOutcome",
    "ProcessingResult",
    "Quota",
    "Replica",
    "ReplicaState",
    "StrEnumType",
    "TenantPolicy",
    "Upload",
    "UploadColumns",
    "UploadKind",
    "UploadState",
    "UploadValues",
    "UtcDateTime",
    "Visibility",
    "new_id",
    "utcnow",
]

#: From alembic's ``naming.rst``; the ``ck`` form needs every CheckConstraint to carry a ``name``.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 36


def new_id() -> str:
    """A fresh row id: UUID4 in its canonical 36-character text form."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always reads back as an aware UTC ``datetime``.

    PostgreSQL stores ``timestamptz`` natively. SQLite has no timestamp type and SQLAlchemy drops the
    offset when it writes the text form, so values are normalised to UTC before writing (making text
    order equal time order) and the UTC zone is attached again on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive timestamp is ambiguous; refusing it here catches the bug at its source.
            raise ValueError(f"naive datetime {value!r} given where an aware one is required")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


E = TypeVar("E", bound=enum.StrEnum)


class StrEnumType(TypeDecorator[E]):
    """A ``StrEnum`` stored as its value in a short VARCHAR; the CHECK lives on the table."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int = 16) -> None:
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        # Accepting the plain string too keeps Core statements (``values(status="READY")``) working,
        # while a typo still fails here instead of at the CHECK constraint.
        return self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_class(value)


def _enum_check(column: str, enum_class: type[enum.StrEnum], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{member.value}'" for member in enum_class)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class FileStatus(enum.StrEnum):
    PENDING = "PENDING"
    UPLOADED = "UPLOADED"
    PROCESSING = "PROCESSING"
    READY = "READY"
    QUARANTINED = "QUARANTINED"
    FAILED = "FAILED"
    DELETED = "DELETED"


class Visibility(enum.StrEnum):
    PRIVATE = "PRIVATE"
    PUBLIC = "PUBLIC"


class UploadKind(enum.StrEnum):
    SINGLE = "SINGLE"
    MULTIPART = "MULTIPART"
    POST_POLICY = "POST_POLICY"
    DEDUP = "DEDUP"


class PartChecksum(enum.StrEnum):
    """The checksum every part of a multipart upload carries (storage is told at creation)."""

    NONE = "NONE"
    CRC32 = "CRC32"
    SHA256 = "SHA256"


class UploadState(enum.StrEnum):
    OPEN = "OPEN"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    EXPIRED = "EXPIRED"


class Permission(enum.StrEnum):
    READ = "READ"
    WRITE = "WRITE"


class ProcessingOutcome(enum.StrEnum):
    PENDING = "PENDING"
    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    ERROR = "ERROR"


class ReplicaState(enum.StrEnum):
    """A copy of a file's original in another store: PENDING until the copy is written, READY once it
    is, MISSING when the reconciler found its object gone (it is copied again)."""

    PENDING = "PENDING"
    READY = "READY"
    MISSING = "MISSING"


#: The name of a store (the column's width; the services check the form).
STORE_NAME_LENGTH = 63
#: The store of a record written before there were several: ``FILESTORE_S3_*``'s.
DEFAULT_STORE = "default"


#: The width of a storage class's name (S3's longest is ``INTELLIGENT_TIERING``).
STORAGE_CLASS_LENGTH = 32
#: Where every original starts, and where a restore brings one back.
READABLE_STORAGE_CLASS = "STANDARD"
#: S3's storage classes whose objects cannot be read before a restore. SeaweedFS stores the class
#: and serves such objects all the same, so the catalogue's tier is what decides (downloads refuse
#: them with ``FILE_ARCHIVED``); ``GLACIER_IR`` is read at once, so it is not here.
ARCHIVE_STORAGE_CLASSES: frozenset[str] = frozenset({"GLACIER", "DEEP_ARCHIVE"})


class LifecycleActionKind(enum.StrEnum):
    TRANSITION = "TRANSITION"
    EXPIRE = "EXPIRE"
    PURGE = "PURGE"
    RESTORE = "RESTORE"


class LifecycleActionState(enum.StrEnum):
    """CLAIMED (leased to a job) → DONE (in the catalogue) → ANNOUNCED (its event published)."""

    CLAIMED = "CLAIMED"
    DONE = "DONE"
    ANNOUNCED = "ANNOUNCED"


def _store_column() -> Mapped[str]:
    return mapped_column(String(STORE_NAME_LENGTH), default=DEFAULT_STORE, server_default=DEFAULT_STORE)


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UtcDateTime(),
        dict[str, str]: JSON(),
        dict[str, Any]: JSON(),
        bytes: LargeBinary(),
    }


def _id_column() -> Mapped[str]:
    return mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)


def _file_fk() -> Mapped[str]:
    # Files are soft-deleted (status DELETED), so cascading deletes only matter for a purge job.
    return mapped_column(String(ID_LENGTH), ForeignKey("files.id", ondelete="CASCADE"), nullable=False)


class Blob(Base):
    """Content stored once per tenant and shared by every file with the same verified digest."""

    __tablename__ = "blobs"
    __table_args__ = (
        # One blob per digest per store: dedup never crosses stores (nor so the residency that
        # separates them).
        UniqueConstraint("tenant", "store", "sha256"),
        CheckConstraint("ref_count >= 0", name="ref_count_non_negative"),
    )

    id: Mapped[str] = _id_column()
    tenant: Mapped[str] = mapped_column(String(255))
    #: The store holding the blob's object.
    store: Mapped[str] = _store_column()
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(1024))
    ref_count: Mapped[int] = mapped_column(Integer, default=0)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class File(Base):
    """One file as the application sees it; the bytes live in object storage under ``storage_key``."""

    __tablename__ = "files"
    __table_args__ = (
        _enum_check("status", FileStatus, "status"),
        _enum_check("visibility", Visibility, "visibility"),
        CheckConstraint("size >= 0", name="size_non_negative"),
        # The contract's limit, in the schema too: a VARCHAR's length binds PostgreSQL, not SQLite.
        CheckConstraint(f"length(name) <= {MAX_NAME_CHARS}", name="name_length"),
        # Every listing is keyset-paginated on (created_at, id) within a tenant, optionally filtered.
        Index("ix_files_tenant_created_at_id", "tenant", "created_at", "id"),
        Index("ix_files_tenant_owner_created_at_id", "tenant", "owner", "created_at", "id"),
        Index("ix_files_tenant_status_created_at_id", "tenant", "status", "created_at", "id"),
    )

    id: Mapped[str] = _id_column()
    tenant: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(SUBJECT_MAX_CHARS))
    name: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    declared_content_type: Mapped[str] = mapped_column(String(MAX_CONTENT_TYPE_CHARS))
    sniffed_content_type: Mapped[str | None] = mapped_column(String(MAX_CONTENT_TYPE_CHARS))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    verified_sha256: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(1024))
    #: The store the original was placed in at upload (its derivatives are written there too).
    store: Mapped[str] = _store_column()
    blob_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("blobs.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[FileStatus] = mapped_column(StrEnumType(FileStatus), default=FileStatus.PENDING)
    status_reason: Mapped[str | None] = mapped_column(Text)
    #: Optimistic-concurrency counter, bumped by every update; the API's ``etag`` is derived from it.
    version: Mapped[int] = mapped_column(Integer, default=1)
    labels: Mapped[dict[str, str]] = mapped_column(default=dict)
    visibility: Mapped[Visibility] = mapped_column(StrEnumType(Visibility), default=Visibility.PRIVATE)
    extracted_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column()
    #: The original's tier in its store (lifecycle rules move it; a restore brings it back).
    storage_class: Mapped[str] = mapped_column(
        String(STORAGE_CLASS_LENGTH), default=READABLE_STORAGE_CLASS, server_default=READABLE_STORAGE_CLASS
    )
    #: Blocks deletion, expiry and purge (SetLegalHold).
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    @property
    def etag(self) -> str:
        return str(self.version)


@dataclass(frozen=True, slots=True)
class FileValues:
    """A file row as the store wrote it, every column a plain value: what an INSERT answers without
    reading the row back or making an ORM object (see :data:`FileColumns`). A test keeps the fields
    and the table's columns the same."""

    id: str
    tenant: str
    owner: str
    name: str
    declared_content_type: str
    sniffed_content_type: str | None
    size: int
    sha256: str | None
    verified_sha256: str | None
    storage_key: str
    store: str
    blob_id: str | None
    status: FileStatus
    status_reason: str | None
    version: int
    labels: dict[str, str]
    visibility: Visibility
    extracted_text: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    storage_class: str
    legal_hold: bool


#: A file's columns by name, however they were read: an ORM object (the lifecycle's paths), a Core
#: Row of the ``files`` table (the reads), or the values an INSERT wrote.
FileColumns: TypeAlias = File | FileValues | Row[Any]


class Upload(Base):
    """An upload session: the broker's record of a presigned single, multipart or POST upload."""

    __tablename__ = "uploads"
    __table_args__ = (
        _enum_check("kind", UploadKind, "kind"),
        _enum_check("state", UploadState, "state"),
        _enum_check("part_checksum", PartChecksum, "part_checksum"),
        Index("ix_uploads_file_id", "file_id"),
        # The reaper scans open uploads by expiry.
        Index("ix_uploads_state_expires_at", "state", "expires_at"),
    )

    id: Mapped[str] = _id_column()
    file_id: Mapped[str] = _file_fk()
    tenant: Mapped[str] = mapped_column(String(255))
    kind: Mapped[UploadKind] = mapped_column(StrEnumType(UploadKind))
    storage_upload_id: Mapped[str | None] = mapped_column(String(1024))
    part_size: Mapped[int] = mapped_column(BigInteger)
    part_count: Mapped[int] = mapped_column(Integer)
    part_checksum: Mapped[PartChecksum] = mapped_column(
        StrEnumType(PartChecksum), default=PartChecksum.NONE, server_default=PartChecksum.NONE.value
    )
    state: Mapped[UploadState] = mapped_column(StrEnumType(UploadState), default=UploadState.OPEN)
    expires_at: Mapped[datetime] = mapped_column()
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    reaper_lock_until: Mapped[datetime | None] = mapped_column()


@dataclass(frozen=True, slots=True)
class UploadValues:
    """An upload row as the store wrote it (see :class:`FileValues`)."""

    id: str
    file_id: str
    tenant: str
    kind: UploadKind
    storage_upload_id: str | None
    part_size: int
    part_count: int
    part_checksum: PartChecksum
    state: UploadState
    expires_at: datetime
    reserved_bytes: int
    created_at: datetime
    updated_at: datetime
    reaper_lock_until: datetime | None


#: An upload's columns by name (see :data:`FileColumns`).
UploadColumns: TypeAlias = Upload | UploadValues | Row[Any]


class Grant(Base):
    """Permission for a principal (other than the owner) to read or write one file."""

    __tablename__ = "grants"
    __table_args__ = (
        _enum_check("permission", Permission, "permission"),
        Index("ix_grants_file_id_principal", "file_id", "principal"),
    )

    id: Mapped[str] = _id_column()
    file_id: Mapped[str] = _file_fk()
    tenant: Mapped[str] = mapped_column(String(255))
    principal: Mapped[str] = mapped_column(String(SUBJECT_MAX_CHARS))
    permission: Mapped[Permission] = mapped_column(StrEnumType(Permission))
    expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Derivative(Base):
    """A regenerable artefact of processing (thumbnail, extracted text), one per file and kind."""

    __tablename__ = "derivatives"
    __table_args__ = (UniqueConstraint("file_id", "kind"),)

    id: Mapped[str] = _id_column()
    file_id: Mapped[str] = _file_fk()
    kind: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(MAX_CONTENT_TYPE_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProcessingResult(Base):
    """The latest outcome of one pipeline step for one file."""

    __tablename__ = "processing_results"
    __table_args__ = (
        UniqueConstraint("file_id", "step"),
        _enum_check("outcome", ProcessingOutcome, "outcome"),
    )

    id: Mapped[str] = _id_column()
    file_id: Mapped[str] = _file_fk()
    step: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[ProcessingOutcome] = mapped_column(StrEnumType(ProcessingOutcome))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Quota(Base):
    """A byte budget for a tenant (``owner == ""``) or for one owner inside a tenant.

    ``used_bytes + reserved_bytes <= limit_bytes`` holds after every reservation but not after a
    settle that overshoots (an upload may end larger than reserved), so it is enforced by the store's
    conditional UPDATE rather than by a CHECK constraint.
    """

    __tablename__ = "quotas"
    __table_args__ = (
        UniqueConstraint("tenant", "owner"),
        CheckConstraint("limit_bytes >= 0", name="limit_non_negative"),
        CheckConstraint("used_bytes >= 0", name="used_non_negative"),
        CheckConstraint("reserved_bytes >= 0", name="reserved_non_negative"),
    )

    id: Mapped[str] = _id_column()
    tenant: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(255), default="")
    limit_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class TenantPolicy(Base):
    """Where a tenant's bytes may live: its residency (the stores allowed; none listed means any
    configured store) and whether READY originals are replicated to every other allowed store."""

    __tablename__ = "tenant_policies"

    tenant: Mapped[str] = mapped_column(String(255), primary_key=True)
    allowed_stores: Mapped[list[str]] = mapped_column(JSON, default=list)
    replicate: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Replica(Base):
    """A copy of a file's original in a store other than the file's own, at the same key."""

    __tablename__ = "replicas"
    __table_args__ = (
        UniqueConstraint("file_id", "store"),
        _enum_check("state", ReplicaState, "state"),
    )

    id: Mapped[str] = _id_column()
    file_id: Mapped[str] = _file_fk()
    store: Mapped[str] = mapped_column(String(STORE_NAME_LENGTH))
    storage_key: Mapped[str] = mapped_column(String(1024))
    state: Mapped[ReplicaState] = mapped_column(StrEnumType(ReplicaState), default=ReplicaState.PENDING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IdempotencyKey(Base):
    """The stored answer of a mutating RPC, replayed for a repeated ``request_id`` (AIP-155)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    tenant: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(128))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LifecycleRule(Base):
    """One of a tenant's lifecycle rules: a selector (name prefix, labels), an age, an action."""

    __tablename__ = "lifecycle_rules"
    __table_args__ = (_enum_check("action", LifecycleActionKind, "action"),)

    tenant: Mapped[str] = mapped_column(String(255), primary_key=True)
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name_prefix: Mapped[str] = mapped_column(String(MAX_NAME_CHARS), default="")
    labels: Mapped[dict[str, str]] = mapped_column(default=dict)
    after_seconds: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[LifecycleActionKind] = mapped_column(StrEnumType(LifecycleActionKind))
    #: TRANSITION: None keeps the file's store.
    target_store: Mapped[str | None] = mapped_column(String(STORE_NAME_LENGTH))
    target_storage_class: Mapped[str] = mapped_column(
        String(STORAGE_CLASS_LENGTH), default=READABLE_STORAGE_CLASS
    )
    purge_after_seconds: Mapped[int] = mapped_column(BigInteger, default=0)


class LifecycleAction(Base):
    """The durable log of lifecycle actions, one row per (file, rule, kind): what makes the job
    resumable (a CLAIMED row whose lease ended is answered to the next claim) and idempotent (a DONE
    row is never due again). A restore's ``rule_key`` is ``restore/<file version>``."""

    __tablename__ = "lifecycle_actions"
    __table_args__ = (
        UniqueConstraint("file_id", "rule_key", "kind"),
        _enum_check("kind", LifecycleActionKind, "kind"),
        _enum_check("state", LifecycleActionState, "state"),
        Index("ix_lifecycle_actions_state_lease_until", "state", "lease_until"),
    )

    id: Mapped[str] = _id_column()
    file_id: Mapped[str] = _file_fk()
    tenant: Mapped[str] = mapped_column(String(255))
    #: The rule's id, or ``restore/<version>`` for a restore.
    rule_key: Mapped[str] = mapped_column(String(80))
    kind: Mapped[LifecycleActionKind] = mapped_column(StrEnumType(LifecycleActionKind))
    state: Mapped[LifecycleActionState] = mapped_column(StrEnumType(LifecycleActionState))
    source_store: Mapped[str] = mapped_column(String(STORE_NAME_LENGTH))
    source_storage_class: Mapped[str] = mapped_column(String(STORAGE_CLASS_LENGTH))
    target_store: Mapped[str] = mapped_column(String(STORE_NAME_LENGTH))
    target_storage_class: Mapped[str] = mapped_column(String(STORAGE_CLASS_LENGTH))
    #: EXPIRE: the objects the soft delete left for PURGE (``{"keys": [...]}``).
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lease_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column()
