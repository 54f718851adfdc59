"""Requests built from the descriptors of ``protos/filestore/v1``, for tests that must cover every RPC
and every field without naming them: a new RPC or field is covered the day it is added.

``rpcs()`` finds every method of every service of every proto file in the package; ``leaves()`` every
field reachable from a request message (through nested messages, repeated fields and maps) as a path
of field descriptors; ``request_with()`` the request whose only set value is the one at such a path.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

PROTO_DIR = Path(__file__).resolve().parents[1] / "protos" / "filestore" / "v1"
TIMESTAMP = "google.protobuf.Timestamp"

Path_ = tuple[FieldDescriptor, ...]


@dataclass(frozen=True)
class Rpc:
    service: ServiceDescriptor
    method: MethodDescriptor

    @property
    def path(self) -> str:
        """The gRPC method path, ``/filestore.v1.UploadService/CreateUpload``."""
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    def __str__(self) -> str:
        return f"{self.service.name}.{self.method.name}"


def services() -> list[ServiceDescriptor]:
    """Every service declared in ``protos/filestore/v1``, public and internal."""
    found: list[ServiceDescriptor] = []
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        module = importlib.import_module(f"filestore.v1.{proto.stem}_pb2")
        found.extend(module.DESCRIPTOR.services_by_name.values())
    return found


def rpcs() -> list[Rpc]:
    return [Rpc(service, method) for service in services() for method in service.methods]


def map_entry(field: FieldDescriptor) -> Descriptor | None:
    entry = field.message_type
    return entry if entry is not None and entry.GetOptions().map_entry else None


def leaves(descriptor: Descriptor, prefix: Path_ = (), seen: frozenset[str] = frozenset()) -> Iterator[Path_]:
    """Every field reachable from ``descriptor``, as the path of fields from it. A Timestamp is a
    leaf of its own (its seconds and nanos are not listed); a message already on the path is not
    entered again, so recursive messages end."""
    for field in descriptor.fields:
        path = (*prefix, field)
        yield path
        nested = field.message_type
        if nested is not None and nested.full_name != TIMESTAMP and nested.full_name not in seen:
            yield from leaves(nested, path, seen | {descriptor.full_name})


def is_timestamp(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.full_name == TIMESTAMP


def sample(field: FieldDescriptor) -> Any:
    """A harmless value of a scalar field's type: the map key and filler the builders use."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return "k"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    return 1


def request_with(request_class: type[Message], path: Path_, value: Any) -> Message:
    """A request whose only set value is ``value`` at ``path``: one element of each repeated field on
    the way, the sample key (:func:`sample`) of each map; a map key leaf is ``value`` itself."""
    request = request_class()
    _put(request, path, value)
    return request


def field_path(path: Path_, value: Any = None) -> str:
    """The path the edge reports in ErrorInfo metadata ``field`` for ``path`` as :func:`request_with`
    fills it: ``file.visibility``, ``requests[0].disposition``, ``labels["k"]``."""
    parts: list[str] = []
    position = 0
    while position < len(path):
        field = path[position]
        text = field.name
        entry = map_entry(field)
        if entry is not None:
            leaf = path[position + 1] if position + 1 < len(path) else None
            key = value if leaf is not None and leaf.name == "key" else sample(entry.fields_by_name["key"])
            text += f"[{json.dumps(key)}]"
            position += 1  # the entry's key or value field names no level of its own
        elif field.is_repeated:
            text += "[0]"
        parts.append(text)
        position += 1
    return ".".join(parts)


def _put(message: Message, path: Path_, value: Any) -> None:
    field, rest = path[0], path[1:]
    container = getattr(message, field.name)
    entry = map_entry(field)
    if entry is not None:
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        leaf, rest = rest[0], rest[1:]
        key = value if leaf is key_field else sample(key_field)
        if value_field.message_type is not None:
            item = container[key]
            if leaf is value_field:
                _set_message(item, rest, value)
        elif leaf is key_field:
            container[key] = sample(value_field)
        else:
            container[key] = value
        return
    if field.is_repeated:
        if field.message_type is not None:
            _set_message(container.add(), rest, value)
        else:
            container.append(value)
        return
    if field.message_type is not None:
        _set_message(container, rest, value)
        return
    setattr(message, field.name, value)


def _set_message(message: Message, rest: Path_, value: Any) -> None:
    if rest:
        _put(message, rest, value)
    else:
        message.CopyFrom(value)


def message_at(request: Message, path: Path_) -> Message:
    """The message at ``path`` (which ends in a message field, through no map) of a new ``request``,
    made on the way as :func:`request_with` makes it."""
    message = request
    for field in path:
        if field.message_type is None or map_entry(field) is not None:
            raise ValueError(f"{field.full_name} holds no single message")
        container = getattr(message, field.name)
        message = container.add() if field.is_repeated else container
    return message
