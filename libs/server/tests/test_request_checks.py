"""The checks every request gets at the edge (filestore.server.request_checks), and the contract that
states their limits: each limit of the table is written in its field's comment in the protos."""

from __future__ import annotations

import importlib.resources
import tempfile
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_tools import protoc

from filestore.core.errors import InvalidArgument
from filestore.core.validation import (
    MAX_CONTENT_TYPE_CHARS,
    MAX_EXTRACTED_TEXT_BYTES,
    MAX_LABEL_KEY_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_LABELS,
    MAX_NAME_CHARS,
)
from filestore.server.request_checks import (
    DEFAULT_MAX_VALUES,
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    VALUE_LIMITS,
    check_request,
)
from filestore.v1 import download_service_pb2 as download
from filestore.v1 import metadata_service_pb2 as metadata
from filestore.v1 import resources_pb2 as resources
from filestore.v1 import upload_service_pb2 as upload

PROTO_ROOT = Path(__file__).resolve().parents[3] / "protos"


def refusal(message: Message) -> tuple[str, dict[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        check_request(message)
    return caught.value.reason, caught.value.metadata


def test_a_request_of_known_values_passes() -> None:
    check_request(
        metadata.ListFilesRequest(
            statuses=[resources.FILE_STATUS_READY, resources.FILE_STATUS_FAILED],
            labels={"team": "a"},
            created_after=Timestamp(seconds=MIN_TIMESTAMP_SECONDS),
            created_before=Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999),
            tenant="acme",
            owner="ann@example.com",
        )
    )
    check_request(metadata.GetFileRequest())  # nothing set, nothing to refuse


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (metadata.UpdateFileRequest(file=resources.File(visibility=99)), "file.visibility"),  # type: ignore[arg-type]
        (metadata.ListFilesRequest(statuses=[1, 42]), "statuses[1]"),  # type: ignore[list-item]
        (
            download.BatchGetDownloadUrlsRequest(
                requests=[download.GetDownloadUrlRequest(), download.GetDownloadUrlRequest(disposition=7)]  # type: ignore[arg-type]
            ),
            "requests[1].disposition",
        ),
        (metadata.EndUploadRecordRequest(state=-1), "state"),  # type: ignore[arg-type]
    ],
    ids=["nested", "repeated", "in-a-list-of-messages", "negative"],
)
def test_an_enum_value_that_names_nothing_is_refused(message: Message, field: str) -> None:
    reason, details = refusal(message)
    assert (reason, details["field"]) == ("INVALID_ENUM_VALUE", field)


@pytest.mark.parametrize(
    "stamp",
    [
        Timestamp(seconds=MAX_TIMESTAMP_SECONDS + 1),
        Timestamp(seconds=MIN_TIMESTAMP_SECONDS - 1),
        Timestamp(seconds=0, nanos=-1),
        Timestamp(seconds=0, nanos=1_000_000_000),
    ],
    ids=["after-9999", "before-0001", "negative-nanos", "a-second-of-nanos"],
)
def test_a_timestamp_outside_its_range_is_refused(stamp: Timestamp) -> None:
    reason, details = refusal(
        metadata.CreateGrantRequest(grant=resources.Grant(file_id="f", principal="bob", expire_time=stamp))
    )
    assert (reason, details) == ("INVALID_TIMESTAMP", {"field": "grant.expire_time"})


def test_repeated_and_map_fields_hold_at_most_their_limit() -> None:
    at_limit = upload.SignPartsRequest(
        part_numbers=list(range(1, 1001)), part_sha256={n: "a" * 64 for n in range(1, 1001)}
    )
    check_request(at_limit)
    at_limit.part_numbers.append(1001)
    assert refusal(at_limit) == ("TOO_MANY_PARTS", {"field": "part_numbers", "max_values": "1000"})
    labels = {f"k{i}": "v" for i in range(65)}
    assert refusal(metadata.CreateFileRequest(file=resources.File(labels=labels))) == (
        "INVALID_LABELS",
        {"field": "file.labels", "max_values": "64"},
    )
    assert refusal(metadata.ListFilesRequest(labels=labels)) == (
        "TOO_MANY_VALUES",
        {"field": "labels", "max_values": "64"},
    )
    # A field without a limit of its own has the default ceiling.
    mask = FieldMask(paths=["name"] * (DEFAULT_MAX_VALUES + 1))
    assert refusal(metadata.UpdateFileRequest(update_mask=mask)) == (
        "TOO_MANY_VALUES",
        {"field": "update_mask.paths", "max_values": str(DEFAULT_MAX_VALUES)},
    )


def test_no_string_may_hold_nul_not_even_a_map_key() -> None:
    assert refusal(metadata.GetFileRequest(file_id="a\x00")) == ("INVALID_STRING", {"field": "file_id"})
    assert refusal(metadata.ListFilesRequest(labels={"k\x00": "v"})) == (
        "INVALID_STRING",
        {"field": 'labels["k\\u0000"]'},
    )
    assert refusal(upload.SignPartsRequest(part_crc32={3: "\x00"})) == (
        "INVALID_STRING",
        {"field": "part_crc32[3]"},
    )


@pytest.mark.parametrize(
    ("message", "reason", "field"),
    [
        (metadata.SetQuotaRequest(tenant="x/y"), "INVALID_TENANT", "tenant"),
        (metadata.GetFileRequest(tenant=".."), "INVALID_TENANT", "tenant"),
        (metadata.ListFilesRequest(tenant="t" * 64), "INVALID_TENANT", "tenant"),
        # `*` is the service tokens' tenant, never one a request names.
        (metadata.SetQuotaRequest(tenant="*"), "INVALID_TENANT", "tenant"),
        (metadata.CreateFileRequest(file=resources.File(tenant="a b")), "INVALID_TENANT", "file.tenant"),
        (metadata.SetQuotaRequest(tenant="acme", owner="o" * 256), "INVALID_OWNER", "owner"),
        (metadata.ListFilesRequest(owner="ann\n"), "INVALID_OWNER", "owner"),
        (metadata.AuthorizeReadRequest(principal="a\u202eb"), "INVALID_PRINCIPAL", "principal"),
        (
            metadata.CreateGrantRequest(grant=resources.Grant(principal="p" * 256)),
            "INVALID_PRINCIPAL",
            "grant.principal",
        ),
        (upload.CreateUploadRequest(request_id="r" * 65), "INVALID_REQUEST_ID", "request_id"),
        (upload.CompleteUploadRequest(request_id="with space"), "INVALID_REQUEST_ID", "request_id"),
    ],
)
def test_identity_fields_follow_their_grammar(message: Message, reason: str, field: str) -> None:
    assert refusal(message) == (reason, {"field": field})


def test_identity_fields_in_their_grammar_pass() -> None:
    check_request(metadata.SetQuotaRequest(tenant="t" * 63, owner="o" * 255))
    check_request(metadata.CreateFileRequest(file=resources.File(tenant="A.b_c-9", owner="service:upload")))
    check_request(upload.CreateUploadRequest(request_id="6f1c9a52-1111-4e8e-9a0f-1d2c3b4a5e6f"))


# ------------------------------------------------------------------------ the contract


def _proto_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The protos of filestore.v1 compiled with their comments (source info), by file name."""
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        protos = sorted((PROTO_ROOT / "filestore" / "v1").glob("*.proto"))
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(proto) for proto in protos),
        ]
        assert protoc.main(args) == 0
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return {file.name: file for file in files}


def _field_comment(files: dict[str, descriptor_pb2.FileDescriptorProto], full_name: str) -> str:
    """The leading comment of the field ``package.Message.field`` (top-level messages only)."""
    pool = descriptor_pool.Default()
    field = pool.FindFieldByName(full_name)
    message = field.containing_type
    source = files[message.file.name]
    message_index = [m.name for m in source.message_type].index(message.name)
    field_index = [f.name for f in source.message_type[message_index].field].index(field.name)
    path = [4, message_index, 2, field_index]  # FileDescriptorProto.message_type, DescriptorProto.field
    for location in source.source_code_info.location:
        if list(location.path) == path:
            return location.leading_comments
    raise AssertionError(f"{full_name} has no comment")


def test_every_limit_of_the_table_is_stated_in_its_fields_proto_comment() -> None:
    files = _proto_files()
    missing = []
    for full_name, limit in VALUE_LIMITS.items():
        comment = _field_comment(files, full_name)
        stated = (f"{limit.max_values:,}", str(limit.max_values))
        if not any(f"at most {text}" in " ".join(comment.lower().split()) for text in stated):
            missing.append(
                f"{full_name}: its comment does not say 'at most {limit.max_values:,}': {comment!r}"
            )
    assert missing == [], "\n".join(missing)


def test_the_default_ceiling_and_every_edge_reason_are_stated_in_the_conventions() -> None:
    locations = _proto_files()["filestore/v1/resources.proto"].source_code_info.location
    syntax = 12  # FileDescriptorProto.syntax: the file's header comment leads it
    header = " ".join(next(loc for loc in locations if list(loc.path) == [syntax]).leading_comments.split())
    assert f"{DEFAULT_MAX_VALUES:,}" in header
    for reason in (
        "MALFORMED_REQUEST",
        "INVALID_ENUM_VALUE",
        "INVALID_TIMESTAMP",
        "TOO_MANY_VALUES",
        "INVALID_STRING",
        "INVALID_TENANT",
        "INVALID_OWNER",
        "INVALID_PRINCIPAL",
        "INVALID_REQUEST_ID",
        "TOKEN_CLAIM_INVALID",
    ):
        assert f"`{reason}`" in header, reason


def test_the_statuses_filter_fits_every_state() -> None:
    states = [value for value in resources.FileStatus.values() if value != resources.FILE_STATUS_UNSPECIFIED]
    assert VALUE_LIMITS["filestore.v1.ListFilesRequest.statuses"].max_values == len(states)


def test_the_string_limits_of_the_validation_module_are_stated_in_their_fields_proto_comments() -> None:
    """Each limit lives once in code (filestore.core.validation) and is written where callers read it."""
    files = _proto_files()
    stated = {
        "filestore.v1.File.name": f"at most {MAX_NAME_CHARS} characters",
        "filestore.v1.CreateUploadRequest.name": f"1-{MAX_NAME_CHARS} characters",
        "filestore.v1.ListFilesRequest.name_prefix": f"at most {MAX_NAME_CHARS} characters",
        "filestore.v1.File.declared_content_type": f"at most {MAX_CONTENT_TYPE_CHARS} characters",
        "filestore.v1.CreateUploadRequest.content_type": f"{MAX_CONTENT_TYPE_CHARS} in all",
        "filestore.v1.File.labels": (
            f"at most {MAX_LABELS} entries (`INVALID_LABELS` beyond); keys 1-{MAX_LABEL_KEY_CHARS} "
            f"characters of [a-z0-9_-], values at most {MAX_LABEL_VALUE_CHARS} characters"
        ),
        "filestore.v1.RecordFileFactsRequest.extracted_text": (
            f"up to {MAX_EXTRACTED_TEXT_BYTES // 2**20} MiB of UTF-8"
        ),
    }
    missing = [
        f"{full_name}: {text!r} not in {comment!r}"
        for full_name, text in stated.items()
        if text.lower() not in (comment := " ".join(_field_comment(files, full_name).split())).lower()
    ]
    assert missing == [], "\n".join(missing)
