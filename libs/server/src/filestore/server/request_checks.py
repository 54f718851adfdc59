"""What every request of every Filestore RPC must be, checked once at the edge of each service.

The server bootstrap (:mod:`filestore.server.bootstrap`) decodes each request itself and runs
:func:`check_request` on it before the servicer sees it. The check walks the message by its
descriptor, nested messages, repeated fields and map values included, so a new RPC or field is
covered without anyone writing a check for it:

* an enum value must name a value of its enum (proto3 keeps unknown numbers, and code that maps
  them with a default would silently coerce them): ``INVALID_ENUM_VALUE``;
* a ``google.protobuf.Timestamp`` must be representable, 0001-01-01 to 9999-12-31 with nanos in
  0..999,999,999: ``INVALID_TIMESTAMP``;
* a repeated or map field holds at most its limit (:data:`VALUE_LIMITS`, else
  :data:`DEFAULT_MAX_VALUES`): ``TOO_MANY_VALUES``, or the reason the contract already gave it;
* no string holds U+0000 (PostgreSQL text cannot, and no Filestore string needs it):
  ``INVALID_STRING``;
* a string field named ``tenant``, ``owner``, ``principal`` or ``request_id`` that is set follows
  its grammar (:data:`NAMED_STRING_RULES`): ``INVALID_TENANT``, ``INVALID_OWNER``,
  ``INVALID_PRINCIPAL``, ``INVALID_REQUEST_ID``.

Every refusal is INVALID_ARGUMENT with the offending field's path (``file.visibility``,
``requests[3].disposition``, ``labels["k"]``) in the ErrorInfo metadata ``field``. What a value
means (UNSPECIFIED not allowed here, a state a user may not set) stays with the servicers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from filestore.core.errors import InvalidArgument
from filestore.core.identity import SUBJECT_GRAMMAR, TENANT_GRAMMAR, is_subject, is_tenant
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_LABELS

__all__ = [
    "DEFAULT_MAX_VALUES",
    "MAX_TIMESTAMP_SECONDS",
    "MIN_TIMESTAMP_SECONDS",
    "NAMED_STRING_RULES",
    "VALUE_LIMITS",
    "NamedStringRule",
    "ValueLimit",
    "check_request",
]

#: Most values of a repeated or map field that has no limit of its own in :data:`VALUE_LIMITS`.
DEFAULT_MAX_VALUES = 1000
#: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range of RFC 3339, and of every language's
#: own date type that Timestamp converts to.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999


@dataclass(frozen=True, slots=True)
class ValueLimit:
    """At most ``max_values`` values; ``reason`` keeps a reason the contract gave the field first."""

    max_values: int
    reason: Reason = Reason.TOO_MANY_VALUES


#: Repeated and map fields with a natural limit, by full field name. Each limit is stated in its
#: field's comment in ``protos/filestore/v1`` (a test holds the two together).
VALUE_LIMITS: Mapping[str, ValueLimit] = {
    "filestore.v1.File.labels": ValueLimit(MAX_LABELS, reason=Reason.INVALID_LABELS),
    "filestore.v1.CreateUploadRequest.labels": ValueLimit(MAX_LABELS, reason=Reason.INVALID_LABELS),
    "filestore.v1.ListFilesRequest.labels": ValueLimit(MAX_LABELS),
    # One per state a file can be in (FILE_STATUS_UNSPECIFIED is no state).
    "filestore.v1.ListFilesRequest.statuses": ValueLimit(7),
    "filestore.v1.SignPartsRequest.part_numbers": ValueLimit(1000, reason=Reason.TOO_MANY_PARTS),
    "filestore.v1.SignPartsRequest.part_sha256": ValueLimit(1000, reason=Reason.TOO_MANY_PARTS),
    "filestore.v1.SignPartsRequest.part_crc32": ValueLimit(1000, reason=Reason.TOO_MANY_PARTS),
    # A multipart upload has at most 10,000 parts (the S3 limit).
    "filestore.v1.CompleteUploadRequest.part_checksums": ValueLimit(10_000),
    "filestore.v1.BatchGetDownloadUrlsRequest.requests": ValueLimit(100, reason=Reason.TOO_MANY_FILES),
    "filestore.v1.ProcessingResult.details": ValueLimit(64),
    # One per pipeline step (five today), with room for more; derivatives: one per kind a run makes.
    "filestore.v1.RecordProcessingOutcomeRequest.results": ValueLimit(8),
    "filestore.v1.RecordProcessingOutcomeRequest.derivatives": ValueLimit(16),
}

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")


def _is_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class NamedStringRule:
    """The grammar of every string field of a given name, wherever it appears in a request."""

    accepts: Callable[[str], bool]
    reason: Reason
    grammar: str


#: Fields that name an identity or a key: they reach SQL columns and object keys, so their shape is
#: checked once here rather than by each servicer. Empty means "not given" and is always accepted.
NAMED_STRING_RULES: Mapping[str, NamedStringRule] = {
    "tenant": NamedStringRule(is_tenant, Reason.INVALID_TENANT, TENANT_GRAMMAR),
    "owner": NamedStringRule(is_subject, Reason.INVALID_OWNER, SUBJECT_GRAMMAR),
    "principal": NamedStringRule(is_subject, Reason.INVALID_PRINCIPAL, SUBJECT_GRAMMAR),
    "request_id": NamedStringRule(
        _is_request_id, Reason.INVALID_REQUEST_ID, "1-64 printable ASCII characters"
    ),
}


def check_request(message: Message) -> None:
    """Refuse ``message`` (INVALID_ARGUMENT) when a value in it breaks a rule of this module."""
    _check_message(message, "")


def _check_message(message: Message, path: str) -> None:
    if isinstance(message, Timestamp):
        _check_timestamp(message, path)
        return
    # ListFields: only the fields that are set, so an empty request costs next to nothing.
    for field, value in message.ListFields():
        field_path = f"{path}.{field.name}" if path else field.name
        if not field.is_repeated:
            _check_value(field, value, field_path)
            continue
        _check_count(field, len(value), field_path)
        entry = _map_entry(field)
        if entry is None:
            for index, item in enumerate(value):
                _check_value(field, item, f"{field_path}[{index}]")
            continue
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        for key, item in value.items():
            item_path = f"{field_path}[{json.dumps(key)}]"
            _check_value(key_field, key, item_path)
            _check_value(value_field, item, item_path)


def _check_value(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _check_message(value, path)
    elif field.enum_type is not None:
        if value not in field.enum_type.values_by_number:
            raise InvalidArgument(
                f"{path}: {value} names no value of {field.enum_type.full_name}",
                reason=Reason.INVALID_ENUM_VALUE,
                metadata={"field": path, "value": str(value)},
            )
    elif field.type == FieldDescriptor.TYPE_STRING:
        _check_string(field, value, path)


def _check_string(field: FieldDescriptor, value: str, path: str) -> None:
    rule = NAMED_STRING_RULES.get(field.name)
    if rule is not None and value and not rule.accepts(value):
        # The value is not repeated back: it is the caller's, and may be anything.
        raise InvalidArgument(f"{path} must be {rule.grammar}", reason=rule.reason, metadata={"field": path})
    if "\x00" in value:
        raise InvalidArgument(
            f"{path} holds U+0000 (NUL), which no Filestore string may hold",
            reason=Reason.INVALID_STRING,
            metadata={"field": path},
        )


def _check_count(field: FieldDescriptor, count: int, path: str) -> None:
    limit = VALUE_LIMITS.get(field.full_name) or ValueLimit(DEFAULT_MAX_VALUES)
    if count > limit.max_values:
        raise InvalidArgument(
            f"{path} holds {count} values, at most {limit.max_values} are accepted",
            reason=limit.reason,
            metadata={"field": path, "max_values": str(limit.max_values)},
        )


def _check_timestamp(stamp: Timestamp, path: str) -> None:
    if not (
        MIN_TIMESTAMP_SECONDS <= stamp.seconds <= MAX_TIMESTAMP_SECONDS and 0 <= stamp.nanos <= MAX_NANOS
    ):
        raise InvalidArgument(
            f"{path} must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z",
            reason=Reason.INVALID_TIMESTAMP,
            metadata={"field": path},
        )


def _map_entry(field: FieldDescriptor) -> Descriptor | None:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        return entry
    return None
