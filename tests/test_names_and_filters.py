"""Names people give files, emoji sequences included, through the real stack; and ListFiles filters
whose every character matches itself, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import unicodedata

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2, metadata_service_pb2_grpc, resources_pb2, upload_service_pb2
from tests.catalogue import catalogue_snapshot
from tests.support import Client, ClientFactory, rpc_error, service_token, stack_channel

C = grpc.StatusCode
ZWJ = "\u200d"
EMOJI_NAMES = [
    f"\U0001f469{ZWJ}\U0001f4bb notes.txt",  # the example: woman technologist
    f"\U0001f468{ZWJ}\U0001f469{ZWJ}\U0001f467 holiday.jpg",  # family
    f"\U0001f469\U0001f3fd{ZWJ}\U0001f680 launch.pdf",  # skin tone, then joiner
    f"\U0001f3f3\ufe0f{ZWJ}\U0001f308 pride.png",  # variation selector, then joiner
    "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f cymru.txt",  # flag of Wales
    "\u2764\ufe0f love.txt",
]
DISGUISED_NAMES = [
    "a\u200db.txt",  # a joiner between letters
    "\ufe0fnotes.txt",  # a lone variation selector at the start
    "notes\U000e0067.txt",  # a tag outside a flag
    "invoice\u202efdp.exe",
    "a\u3164b.txt",  # Hangul filler
]


async def test_names_with_emoji_sequences_are_accepted_as_sent(client_for: ClientFactory) -> None:
    """Names built with the zero-width joiner were refused as holding a format character."""
    client = client_for("alice", f"names-{os.urandom(4).hex()}")
    for name in EMOJI_NAMES:
        created = await client.upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(name=name, size=5, content_type="text/plain")
        )
        assert created.file.name == name
    renamed = await client.metadata.UpdateFile(
        metadata_service_pb2.UpdateFileRequest(
            file=resources_pb2.File(id=created.file.id, name=EMOJI_NAMES[0]),
            update_mask=FieldMask(paths=["name"]),
        )
    )
    assert renamed.name == EMOJI_NAMES[0]
    stored = await client.metadata.GetFile(metadata_service_pb2.GetFileRequest(file_id=created.file.id))
    assert stored.name == EMOJI_NAMES[0]


async def test_invisible_characters_that_bind_no_emoji_are_refused(
    stack: Stack, client_for: ClientFactory
) -> None:
    tenant = f"names-{os.urandom(4).hex()}"
    client = client_for("alice", tenant)
    file = await client.metadata.CreateFile(
        metadata_service_pb2.CreateFileRequest(
            file=resources_pb2.File(name="kept.txt", size=5, declared_content_type="text/plain")
        )
    )
    before = await catalogue_snapshot(stack, tenant)
    for name in DISGUISED_NAMES:
        for call in (
            client.upload.CreateUpload(
                upload_service_pb2.CreateUploadRequest(name=name, size=5, content_type="text/plain")
            ),
            client.metadata.UpdateFile(
                metadata_service_pb2.UpdateFileRequest(
                    file=resources_pb2.File(id=file.id, name=name), update_mask=FieldMask(paths=["name"])
                )
            ),
        ):
            error = await rpc_error(call)
            assert (error.code, error.reason) == (C.INVALID_ARGUMENT, "INVALID_NAME"), ascii(name)
    assert await catalogue_snapshot(stack, tenant) == before


@pytest.fixture
async def lister(stack: Stack, client_for: ClientFactory) -> Client:
    """A user with files whose names, types and extracted text hold the characters LIKE treats as
    wildcards or escapes, next to files those characters would match as wildcards."""
    client = client_for("alice", f"filters-{os.urandom(4).hex()}")
    token = service_token(stack)
    async with stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token) as channel:
        service = metadata_service_pb2_grpc.MetadataServiceStub(channel)
        for name, content_type in [
            ("100% done.txt", "text/plain"),
            ("1000 done.txt", "text/plain"),
            ("a_b.txt", "text/x_y"),
            ("axb.txt", "text/xzy"),
            ("c\\d.txt", "text/plain"),
            ("c/d.txt", "text/plain"),
            ("Caf\u00e9.txt", "text/plain"),
        ]:
            file = await client.metadata.CreateFile(
                metadata_service_pb2.CreateFileRequest(
                    file=resources_pb2.File(name=name, size=5, declared_content_type=content_type)
                )
            )
            await service.RecordFileFacts(
                metadata_service_pb2.RecordFileFactsRequest(
                    file_id=file.id, tenant=client.tenant, extracted_text=f"text of {name}"
                )
            )
    return client


async def _names(client: Client, **filters: str) -> list[str]:
    listed = await client.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(**filters))
    return sorted(file.name for file in listed.files)


@pytest.mark.parametrize(
    ("filters", "names"),
    [
        ({"name_prefix": "100%"}, ["100% done.txt"]),
        ({"name_prefix": "%"}, []),
        ({"name_prefix": "a_"}, ["a_b.txt"]),
        ({"name_prefix": "_"}, []),
        ({"name_prefix": "c\\"}, ["c\\d.txt"]),
        ({"name_prefix": "c/"}, ["c/d.txt"]),
        ({"content_type_prefix": "text/x_"}, ["a_b.txt"]),
        ({"content_type_prefix": "%"}, []),
        ({"text_contains": "0%"}, ["100% done.txt"]),
        ({"text_contains": "%"}, ["100% done.txt"]),
        ({"text_contains": "a_b"}, ["a_b.txt"]),
        ({"text_contains": "_"}, ["a_b.txt"]),
        ({"text_contains": "c\\d"}, ["c\\d.txt"]),
        ({"text_contains": "c/d"}, ["c/d.txt"]),
        ({"text_contains": "%%"}, []),
    ],
)
async def test_filters_match_every_character_as_itself(
    lister: Client, filters: dict[str, str], names: list[str]
) -> None:
    assert await _names(lister, **filters) == names


async def test_a_name_prefix_finds_names_in_any_normalization_form(lister: Client) -> None:
    """Names are stored in NFC; a prefix typed in NFD (as macOS spells file names) found nothing."""
    decomposed = unicodedata.normalize("NFD", "Caf\u00e9")
    assert decomposed != "Caf\u00e9"
    assert await _names(lister, name_prefix=decomposed) == ["Caf\u00e9.txt"]
