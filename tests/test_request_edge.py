"""What no request may hold, sent to every RPC of every Filestore service on the real stack.

The requests are built from the descriptors of ``protos/filestore/v1`` (see ``tests/proto_walk.py``),
so a new RPC or field is covered without editing this file. Each case is a request whose only set
value is the wrong one, sent as a user and as a service (whichever an RPC needs, the edge answers
before the servicer), and each sweep proves that nothing changed in the catalogue or the bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from filestore.core.auth import mint_token
from filestore.core.errors import FilestoreError, error_from_rpc
from filestore.server.request_checks import (
    DEFAULT_MAX_VALUES,
    MAX_TIMESTAMP_SECONDS,
    NAMED_STRING_RULES,
    VALUE_LIMITS,
    ValueLimit,
)
from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2, resources_pb2
from tests.catalogue import catalogue_snapshot
from tests.proto_walk import (
    Path_,
    Rpc,
    field_path,
    is_timestamp,
    leaves,
    map_entry,
    message_at,
    request_with,
    rpcs,
    sample,
)
from tests.storage import admin_storage
from tests.support import ClientFactory, bare_channel, rpc_error, service_token

C = grpc.StatusCode
#: Answers that mean the server failed rather than judged the request.
SERVER_FAULTS = frozenset({C.INTERNAL, C.UNKNOWN, C.RESOURCE_EXHAUSTED, C.DATA_LOSS})
#: Fits in a string field and in the ASCII range, so it can be swapped byte for byte in the encoded
#: request for bytes that are not UTF-8 (no length prefix changes).
MARKER = "zz-not-utf8-zz"
NOT_UTF8 = b"\xff" * len(MARKER)
INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True)
class Case:
    rpc: Rpc
    path: Path_
    payload: bytes

    def __str__(self) -> str:
        return f"{self.rpc} {'.'.join(field.name for field in self.path)}"


class Edge:
    """Raw calls to every service of the stack, as a user of a tenant of the test's own and as a
    service, with what changed in that tenant's catalogue rows and objects."""

    def __init__(self, stack: Stack) -> None:
        endpoints = stack.endpoints
        self.stack = stack
        self.tenant = f"edge-{uuid.uuid4().hex[:12]}"
        self.tokens = {
            "user": mint_token(endpoints.auth_secret, subject="alice", tenant=self.tenant),
            "service": service_token(stack),
        }
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, rpc: Rpc) -> grpc.aio.Channel:
        # A service of the package that the stack does not serve fails here, by name.
        service = rpc.service.name.removesuffix("Service").lower()
        address: str = getattr(self.stack.endpoints, f"{service}_addr")
        if address not in self._channels:
            self._channels[address] = bare_channel(self.stack.endpoints, address)
        return self._channels[address]

    async def answers(self, case: Case) -> dict[str, FilestoreError | None]:
        """The error each caller got (None: the call succeeded)."""
        call = self._channel(case.rpc).unary_unary(case.rpc.path)
        answers: dict[str, FilestoreError | None] = {}
        for caller, token in self.tokens.items():
            try:
                await call(case.payload, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
                answers[caller] = None
            except grpc.RpcError as error:
                answers[caller] = error_from_rpc(error)
        return answers

    async def state(self) -> tuple[object, list[str]]:
        endpoints = self.stack.endpoints
        storage = admin_storage(self.stack)
        keys = [
            item["Key"]
            for area in ("originals", "derivatives")
            for item in storage.list_objects_v2(Bucket=endpoints.bucket, Prefix=f"{area}/{self.tenant}/").get(
                "Contents", []
            )
        ]
        return await catalogue_snapshot(self.stack, self.tenant), sorted(keys)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@pytest.fixture
async def edge(stack: Stack, client_for: ClientFactory) -> AsyncIterator[Edge]:
    edge = Edge(stack)
    # Something for a sweep to change if it could: a file of the test's tenant.
    alice = client_for("alice", edge.tenant)
    await alice.metadata.CreateFile(
        metadata_service_pb2.CreateFileRequest(
            file=resources_pb2.File(name="kept.txt", size=3, declared_content_type="text/plain")
        )
    )
    yield edge
    await edge.close()


def _cases(select: Callable[[FieldDescriptor], bool], value: Callable[[Path_], Any]) -> Iterator[Case]:
    for rpc in rpcs():
        for path in leaves(rpc.method.input_type):
            if select(path[-1]):
                request = request_with(rpc.request_class, path, value(path))
                yield Case(rpc, path, request.SerializeToString())


async def _sweep(
    edge: Edge, cases: list[Case], expect: Callable[[Case], tuple[C, str, dict[str, str]]]
) -> list[str]:
    """Send every case as every caller; the failures, one line each."""
    assert cases, "the walk found nothing to send"
    before = await edge.state()
    failures = []
    for case in cases:
        code, reason, metadata = expect(case)
        for caller, error in (await edge.answers(case)).items():
            got = None if error is None else (error.code, error.reason, error.metadata)
            if (
                error is None
                or (error.code, error.reason) != (code, reason)
                or not (metadata.items() <= error.metadata.items())
            ):
                failures.append(f"{case} as {caller}: got {got}, want {(code, reason, metadata)}")
    assert await edge.state() == before, "a refused request changed the catalogue or the bucket"
    return failures


def _unknown_number(path: Path_) -> int:
    return max(value.number for value in path[-1].enum_type.values) + 1


async def test_an_unknown_enum_value_is_refused_in_every_field_of_every_rpc(edge: Edge) -> None:
    cases = list(_cases(lambda leaf: leaf.type == FieldDescriptor.TYPE_ENUM, _unknown_number))
    failures = await _sweep(
        edge,
        cases,
        lambda case: (
            C.INVALID_ARGUMENT,
            "INVALID_ENUM_VALUE",
            {"field": field_path(case.path), "value": str(_unknown_number(case.path))},
        ),
    )
    assert failures == [], "\n".join(failures)


def _with_invalid_utf8(case: Case) -> Case:
    assert case.payload.count(MARKER.encode()) == 1
    return Case(case.rpc, case.path, case.payload.replace(MARKER.encode(), NOT_UTF8))


async def test_a_string_that_is_not_utf8_is_a_malformed_request_in_every_rpc(edge: Edge) -> None:
    cases = [
        _with_invalid_utf8(case)
        for case in _cases(lambda leaf: leaf.type == FieldDescriptor.TYPE_STRING, lambda _: MARKER)
    ]
    failures = await _sweep(edge, cases, lambda _: (C.INVALID_ARGUMENT, "MALFORMED_REQUEST", {}))
    assert failures == [], "\n".join(failures)


async def test_bytes_that_are_no_request_at_all_are_a_malformed_request(edge: Edge) -> None:
    # A tag that never ends, a length past the end, a varint cut short.
    garbage = [b"\xff\xff\xff\xff", b"\x0a\xff\x01", b"\x08"]
    cases = [Case(rpc, (), payload) for rpc in rpcs() for payload in garbage]
    failures = await _sweep(edge, cases, lambda _: (C.INVALID_ARGUMENT, "MALFORMED_REQUEST", {}))
    assert failures == [], "\n".join(failures)


NUL_VALUE = "a\x00b"


def _nul_expectation(case: Case) -> tuple[C, str, dict[str, str]]:
    leaf = case.path[-1]
    rule = NAMED_STRING_RULES.get(leaf.name)
    reason = rule.reason if rule is not None else "INVALID_STRING"
    return C.INVALID_ARGUMENT, reason, {"field": field_path(case.path, NUL_VALUE)}


async def test_a_nul_character_is_refused_in_every_string_of_every_rpc(edge: Edge) -> None:
    cases = list(_cases(lambda leaf: leaf.type == FieldDescriptor.TYPE_STRING, lambda _: NUL_VALUE))
    failures = await _sweep(edge, cases, _nul_expectation)
    assert failures == [], "\n".join(failures)


async def test_an_unrepresentable_timestamp_is_refused_in_every_rpc(edge: Edge) -> None:
    beyond = Timestamp(seconds=MAX_TIMESTAMP_SECONDS + 1)  # 10000-01-01T00:00:00Z
    cases = list(_cases(is_timestamp, lambda _: beyond))
    failures = await _sweep(
        edge, cases, lambda case: (C.INVALID_ARGUMENT, "INVALID_TIMESTAMP", {"field": field_path(case.path)})
    )
    assert failures == [], "\n".join(failures)


def _limit(path: Path_) -> ValueLimit:
    return VALUE_LIMITS.get(path[-1].full_name) or ValueLimit(DEFAULT_MAX_VALUES)


def _fill(field: FieldDescriptor) -> Any:
    """A valid value of a repeated field's element type (an enum's first named non-zero value)."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        return max(value.number for value in field.enum_type.values)
    return sample(field)


def _too_many(rpc: Rpc, path: Path_) -> Case:
    request = rpc.request_class()
    holder = message_at(request, path[:-1]) if len(path) > 1 else request
    field = path[-1]
    count = _limit(path).max_values + 1
    container = getattr(holder, field.name)
    entry = map_entry(field)
    if entry is not None:
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        for number in range(1, count + 1):
            key = f"k{number}" if key_field.type == FieldDescriptor.TYPE_STRING else number
            if value_field.message_type is None:
                container[key] = _fill(value_field)
            else:
                container[key].SetInParent()
    elif field.message_type is not None:
        for _ in range(count):
            container.add()
    else:
        container.extend([_fill(field)] * count)
    return Case(rpc, path, request.SerializeToString())


async def test_every_repeated_field_of_every_rpc_is_bounded(edge: Edge) -> None:
    cases = [
        _too_many(rpc, path)
        for rpc in rpcs()
        for path in leaves(rpc.method.input_type)
        if path[-1].is_repeated
    ]

    def expect(case: Case) -> tuple[C, str, dict[str, str]]:
        limit = _limit(case.path)
        where = ".".join(filter(None, [field_path(case.path[:-1]), case.path[-1].name]))
        return C.INVALID_ARGUMENT, limit.reason, {"field": where, "max_values": str(limit.max_values)}

    failures = await _sweep(edge, cases, expect)
    assert failures == [], "\n".join(failures)


def _extremes(leaf: FieldDescriptor) -> list[Any]:
    if leaf.type == FieldDescriptor.TYPE_STRING:
        return ["x" * 100_000]
    return list(INT_BOUNDS.get(leaf.type, ()))


async def test_extreme_values_never_answer_a_server_fault(edge: Edge) -> None:
    """Huge strings and the ends of every integer type, in every field of every RPC: any answer but
    a server fault, and a refusal carries its ErrorInfo (an id of 100 KB quoted back in the error's
    metadata once broke the trailer, and the caller saw RESOURCE_EXHAUSTED)."""
    cases = [
        Case(rpc, path, request_with(rpc.request_class, path, value).SerializeToString())
        for rpc in rpcs()
        for path in leaves(rpc.method.input_type)
        for value in _extremes(path[-1])
    ]
    assert cases
    before = await edge.state()
    failures = []
    for case in cases:
        for caller, error in (await edge.answers(case)).items():
            if error is not None and (error.code in SERVER_FAULTS or not error.domain):
                failures.append(f"{case} as {caller}: {error.code.name} {error.reason} {error.message[:120]}")
    assert await edge.state() == before
    assert failures == [], "\n".join(failures)


async def test_an_unknown_visibility_is_refused_and_changes_nothing(
    edge: Edge, client_for: ClientFactory
) -> None:
    """The issue's example: UpdateFile with visibility 99 succeeded and stored PRIVATE."""
    alice = client_for("alice", edge.tenant)
    file = await alice.metadata.CreateFile(
        metadata_service_pb2.CreateFileRequest(
            file=resources_pb2.File(
                name="public.txt",
                size=3,
                declared_content_type="text/plain",
                visibility=resources_pb2.VISIBILITY_PUBLIC,
            )
        )
    )
    before = await edge.state()
    update = metadata_service_pb2.UpdateFileRequest(
        file=resources_pb2.File(id=file.id, etag=file.etag, visibility=99),
        update_mask=FieldMask(paths=["visibility"]),
    )
    create = metadata_service_pb2.CreateFileRequest(
        file=resources_pb2.File(name="new.txt", size=3, declared_content_type="text/plain", visibility=99)
    )
    for call in (alice.metadata.UpdateFile(update), alice.metadata.CreateFile(create)):
        error = await rpc_error(call)
        assert (error.code, error.reason, error.metadata["field"]) == (
            C.INVALID_ARGUMENT,
            "INVALID_ENUM_VALUE",
            "file.visibility",
        )
    assert await edge.state() == before
    stored = await alice.metadata.GetFile(metadata_service_pb2.GetFileRequest(file_id=file.id))
    assert (stored.visibility, stored.etag) == (resources_pb2.VISIBILITY_PUBLIC, file.etag)


async def test_list_files_answers_huge_filters_and_far_timestamps_with_a_reason(
    edge: Edge, client_for: ClientFactory
) -> None:
    """A labels filter of 1,000 or 10,000 entries, and a time outside 0001..9999, were INTERNAL."""
    alice = client_for("alice", edge.tenant)
    for count in (65, 1_000, 10_000):
        error = await rpc_error(
            alice.metadata.ListFiles(
                metadata_service_pb2.ListFilesRequest(labels={f"k{i}": "v" for i in range(count)})
            )
        )
        assert (error.code, error.reason, error.metadata) == (
            C.INVALID_ARGUMENT,
            "TOO_MANY_VALUES",
            {"field": "labels", "max_values": "64"},
        )
    listed = await alice.metadata.ListFiles(
        metadata_service_pb2.ListFilesRequest(labels={f"k{i}": "v" for i in range(64)})
    )
    assert list(listed.files) == []
    for stamp in (
        Timestamp(seconds=2**40),
        Timestamp(seconds=-(2**40)),
        Timestamp(seconds=0, nanos=-1),
        Timestamp(seconds=0, nanos=10**9),
    ):
        for request in (
            metadata_service_pb2.ListFilesRequest(created_after=stamp),
            metadata_service_pb2.ListFilesRequest(created_before=stamp),
        ):
            error = await rpc_error(alice.metadata.ListFiles(request))
            assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "INVALID_TIMESTAMP")
    # The ends of the range are times like any other.
    everything = metadata_service_pb2.ListFilesRequest(
        created_after=Timestamp(seconds=-62_135_596_800),
        created_before=Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999),
    )
    assert [file.name for file in (await alice.metadata.ListFiles(everything)).files] == ["kept.txt"]
