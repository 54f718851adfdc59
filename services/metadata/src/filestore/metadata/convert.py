"""Rows of the catalogue to protobuf messages and back (enums map by name).

A row is read by column name, so a message is made the same way from an ORM object, a Core Row or
the values the store just wrote (:data:`filestore.metadata.db.models.FileColumns`)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Row

from filestore.core.errors import InvalidArgument
from filestore.core.keys import original_key
from filestore.core.reasons import Reason
from filestore.metadata.db import models
from filestore.metadata.db.store.placement import Residency
from filestore.v1 import metadata_service_pb2, resources_pb2

E = TypeVar("E", bound=enum.StrEnum)


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _member(wrapper: Any, number: int, prefix: str, model: type[E]) -> E | None:
    """The model's member named like value ``number`` of the generated proto enum ``wrapper`` (typed
    loosely: each generated enum has its own wrapper class); None for a number this build does not
    know (a newer client's, or garbage) and for names the model lacks (UNSPECIFIED)."""
    if number not in wrapper.values():
        return None
    return model.__members__.get(wrapper.Name(number).removeprefix(prefix))


def file_status(status: models.FileStatus) -> resources_pb2.FileStatus.ValueType:
    return resources_pb2.FileStatus.Value(f"FILE_STATUS_{status.name}")


def file_status_from_proto(status: resources_pb2.FileStatus.ValueType) -> models.FileStatus | None:
    return _member(resources_pb2.FileStatus, status, "FILE_STATUS_", models.FileStatus)


def upload_kind(kind: models.UploadKind) -> resources_pb2.UploadKind.ValueType:
    return resources_pb2.UploadKind.Value(f"UPLOAD_KIND_{kind.name}")


def part_checksum(checksum: models.PartChecksum) -> resources_pb2.ChecksumAlgorithm.ValueType:
    if checksum is models.PartChecksum.NONE:
        return resources_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED
    return resources_pb2.ChecksumAlgorithm.Value(f"CHECKSUM_ALGORITHM_{checksum.name}")


def part_checksum_from_proto(
    algorithm: resources_pb2.ChecksumAlgorithm.ValueType,
) -> models.PartChecksum | None:
    """The model value; None for a number this service does not know (a newer client's)."""
    if algorithm == resources_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED:
        return models.PartChecksum.NONE
    return _member(resources_pb2.ChecksumAlgorithm, algorithm, "CHECKSUM_ALGORITHM_", models.PartChecksum)


def upload_kind_from_proto(kind: resources_pb2.UploadKind.ValueType) -> models.UploadKind | None:
    return _member(resources_pb2.UploadKind, kind, "UPLOAD_KIND_", models.UploadKind)


def upload_state(state: models.UploadState) -> resources_pb2.UploadState.ValueType:
    return resources_pb2.UploadState.Value(f"UPLOAD_STATE_{state.name}")


def step_outcome(outcome: models.ProcessingOutcome) -> resources_pb2.StepOutcome.ValueType:
    return resources_pb2.StepOutcome.Value(f"STEP_OUTCOME_{outcome.name}")


def step_outcome_from_proto(outcome: resources_pb2.StepOutcome.ValueType) -> models.ProcessingOutcome | None:
    return _member(resources_pb2.StepOutcome, outcome, "STEP_OUTCOME_", models.ProcessingOutcome)


def file_message(row: models.FileColumns, *, replica_stores: Sequence[str] = ()) -> resources_pb2.File:
    """The file as the contract shows it; ``replica_stores``: the READY replicas' stores, for the
    answers that name them (GetFile, AuthorizeRead)."""
    message = resources_pb2.File(
        id=row.id,
        tenant=row.tenant,
        owner=row.owner,
        name=row.name,
        declared_content_type=row.declared_content_type,
        sniffed_content_type=row.sniffed_content_type or "",
        size=row.size,
        sha256=row.verified_sha256 or row.sha256 or "",
        status=file_status(row.status),
        status_reason=row.status_reason or "",
        visibility=resources_pb2.Visibility.Value(f"VISIBILITY_{row.visibility.name}"),
        labels=row.labels,
        etag=str(row.version),
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        # A deduplicated file reads another file's bytes: its key is not the one made from its own id.
        deduplicated=row.storage_key != original_key(row.tenant, row.id),
        store=row.store,
        replica_stores=sorted(replica_stores),
        storage_class=row.storage_class,
        archived=row.storage_class in models.ARCHIVE_STORAGE_CLASSES,
        legal_hold=row.legal_hold,
    )
    if row.deleted_at is not None:
        message.delete_time.CopyFrom(timestamp(row.deleted_at))
    return message


def upload_record(
    upload: models.UploadColumns, file: models.FileColumns
) -> metadata_service_pb2.UploadRecord:
    return metadata_service_pb2.UploadRecord(
        id=upload.id,
        file_id=upload.file_id,
        tenant=upload.tenant,
        owner=file.owner,
        kind=upload_kind(upload.kind),
        state=upload_state(upload.state),
        size=file.size,
        content_type=file.declared_content_type,
        sha256=file.sha256 or "",
        storage_key=file.storage_key,
        storage_upload_id=upload.storage_upload_id or "",
        part_size=upload.part_size,
        part_count=upload.part_count,
        part_checksum_algorithm=part_checksum(upload.part_checksum),
        store=file.store,
        reserved_bytes=upload.reserved_bytes,
        expire_time=timestamp(upload.expires_at),
        create_time=timestamp(upload.created_at),
    )


def processing_result(row: models.ProcessingResult) -> resources_pb2.ProcessingResult:
    return resources_pb2.ProcessingResult(
        file_id=row.file_id,
        step=row.step,
        outcome=step_outcome(row.outcome),
        details={key: str(value) for key, value in row.details.items()},
        attempts=row.attempts,
        update_time=timestamp(row.updated_at),
    )


def visibility_from_proto(visibility: resources_pb2.Visibility.ValueType) -> models.Visibility:
    if visibility == resources_pb2.VISIBILITY_PUBLIC:
        return models.Visibility.PUBLIC
    return models.Visibility.PRIVATE


def permission_from_proto(permission: resources_pb2.Permission.ValueType) -> models.Permission:
    converted = _member(resources_pb2.Permission, permission, "PERMISSION_", models.Permission)
    if converted is None:
        raise InvalidArgument("permission must be READ or WRITE", reason=Reason.INVALID_PERMISSION)
    return converted


def grant(row: models.Grant) -> resources_pb2.Grant:
    message = resources_pb2.Grant(
        id=row.id,
        file_id=row.file_id,
        principal=row.principal,
        permission=resources_pb2.Permission.Value(f"PERMISSION_{row.permission.name}"),
        create_time=timestamp(row.created_at),
    )
    if row.expires_at is not None:
        message.expire_time.CopyFrom(timestamp(row.expires_at))
    return message


def derivative(row: models.Derivative) -> resources_pb2.Derivative:
    return resources_pb2.Derivative(
        file_id=row.file_id,
        kind=row.kind,
        size=row.size,
        content_type=row.content_type,
        storage_key=row.storage_key,
        create_time=timestamp(row.created_at),
    )


def quota(row: models.Quota | Row[Any]) -> resources_pb2.Quota:
    return resources_pb2.Quota(
        tenant=row.tenant,
        owner=row.owner,
        limit_bytes=row.limit_bytes,
        used_bytes=row.used_bytes,
        reserved_bytes=row.reserved_bytes,
    )


def storage_policy(residency: Residency) -> metadata_service_pb2.StoragePolicy:
    return metadata_service_pb2.StoragePolicy(
        tenant=residency.tenant, allowed_stores=list(residency.allowed_stores), replicate=residency.replicate
    )


def replica(row: models.Replica) -> metadata_service_pb2.Replica:
    return metadata_service_pb2.Replica(
        file_id=row.file_id,
        store=row.store,
        state=metadata_service_pb2.ReplicaState.Value(f"REPLICA_STATE_{row.state.name}"),
    )


def replica_state_from_proto(
    value: metadata_service_pb2.ReplicaState.ValueType,
) -> models.ReplicaState | None:
    name = metadata_service_pb2.ReplicaState.Name(value).removeprefix("REPLICA_STATE_")
    return models.ReplicaState.__members__.get(name)


def lifecycle_kind(kind: models.LifecycleActionKind) -> metadata_service_pb2.LifecycleActionKind.ValueType:
    return metadata_service_pb2.LifecycleActionKind.Value(f"LIFECYCLE_ACTION_KIND_{kind.name}")


def lifecycle_kind_from_proto(
    value: metadata_service_pb2.LifecycleActionKind.ValueType,
) -> models.LifecycleActionKind | None:
    name = metadata_service_pb2.LifecycleActionKind.Name(value).removeprefix("LIFECYCLE_ACTION_KIND_")
    return models.LifecycleActionKind.__members__.get(name)


def lifecycle_rule(row: models.LifecycleRule) -> metadata_service_pb2.LifecycleRule:
    return metadata_service_pb2.LifecycleRule(
        id=row.id,
        name_prefix=row.name_prefix,
        labels=row.labels,
        after_seconds=row.after_seconds,
        action=lifecycle_kind(row.action),
        target_store=row.target_store or "",
        target_storage_class=row.target_storage_class
        if row.action == models.LifecycleActionKind.TRANSITION
        else "",
        purge_after_seconds=row.purge_after_seconds,
    )


def lifecycle_action(
    row: models.LifecycleAction, file: models.FileColumns | None = None, *, planned: bool = False
) -> metadata_service_pb2.LifecycleAction:
    """An action as the contract shows it; ``file`` adds what a job needs to act (its key, type,
    size). A restore's ``rule_key`` (``restore/<version>``) is no rule: its ``rule_id`` is empty."""
    state = "PLANNED" if planned else row.state.name
    message = metadata_service_pb2.LifecycleAction(
        id="" if planned else row.id,
        file_id=row.file_id,
        tenant=row.tenant,
        rule_id="" if row.kind == models.LifecycleActionKind.RESTORE else row.rule_key,
        kind=lifecycle_kind(row.kind),
        state=metadata_service_pb2.LifecycleActionState.Value(f"LIFECYCLE_ACTION_STATE_{state}"),
        source_store=row.source_store,
        source_storage_class=row.source_storage_class,
        target_store=row.target_store,
        target_storage_class=row.target_storage_class,
        create_time=timestamp(row.created_at),
    )
    if row.done_at is not None:
        message.done_time.CopyFrom(timestamp(row.done_at))
    if file is not None:
        message.storage_key = file.storage_key
        message.content_type = file.declared_content_type
        message.size = file.size
    return message
