"""The object store (``filestore.server.storage``) against the stack's real SeaweedFS: typed answers,
listings in pages, multipart bookkeeping through URLs it signs, reads in ranges and in bounded chunks,
refusals told apart from silence (silence itself: libs/server/tests/test_dependencies.py), and two
stores side by side as two values.

Each test works under a prefix of its own and removes what it made: the reconciler would rightly call
leftovers objects without records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from filestore.core.errors import FailedPrecondition, Unavailable
from filestore.server.settings import S3Settings
from filestore.server.sigv4 import PartChecksum, PartToSign
from filestore.server.storage import (
    CORS_DENY_ALL_ORIGIN,
    ObjectStore,
    StorageRefused,
    StoreConfig,
    StoreCredentials,
)
from filestore.stack import Stack
from tests.storage import admin_storage, admin_store, bucket_cors_kept

MIB = 1024**2
CONTENT_TYPE = "application/octet-stream"


@pytest.fixture
def store(stack: Stack) -> ObjectStore:
    return admin_store(stack)


@pytest.fixture
async def prefix(store: ObjectStore) -> AsyncIterator[str]:
    """A prefix of the test's own, emptied afterwards (objects and open multipart uploads)."""
    mine = f"originals/store-{uuid.uuid4().hex[:12]}/"
    yield mine
    async for page in store.list_objects(mine):
        for listed in page:
            await store.delete(listed.key)
    async for uploads in store.list_multipart_uploads(mine):
        for upload in uploads:
            await store.abort_multipart(upload.key, upload.upload_id)


def read_all(store: ObjectStore, key: str, *, chunk_bytes: int) -> list[bytes]:
    """The chunks of a whole-object stream (blocking, as its consumers are)."""
    return list(store.stream(key, chunk_bytes=chunk_bytes))


async def send(url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.put(url, headers=headers, content=body)


async def test_an_object_is_headed_read_in_ranges_and_streamed_in_bounded_chunks(
    store: ObjectStore, prefix: str
) -> None:
    body = os.urandom(200_000)
    key = f"{prefix}object"
    await store.put(key, body, content_type=CONTENT_TYPE)

    head = await store.head(key)
    assert head is not None
    # A single PUT's ETag is the MD5 of its body, without the quotes S3 puts around it.
    assert (head.size, head.etag) == (len(body), hashlib.md5(body).hexdigest())

    assert await store.read_range(key, start=0, length=10) == body[:10]
    assert await store.read_range(key, start=199_990, length=100) == body[199_990:]
    assert await store.read_range(key, start=len(body) + 5, length=10) == b""

    chunks = await asyncio.to_thread(read_all, store, key, chunk_bytes=64 * 1024)
    assert b"".join(chunks) == body
    assert len(chunks) >= 4
    assert max(len(chunk) for chunk in chunks) <= 64 * 1024


async def test_an_empty_object_reads_as_no_bytes(store: ObjectStore, prefix: str) -> None:
    key = f"{prefix}empty"
    await store.put(key, b"", content_type=CONTENT_TYPE)
    head = await store.head(key)
    assert head is not None
    assert head.size == 0
    # Storage refuses any Range of an empty object (it has no byte 0): that is no bytes, not an error.
    assert await store.read_range(key, start=0, length=16) == b""
    assert await asyncio.to_thread(read_all, store, key, chunk_bytes=1024) == []


async def test_a_missing_object_is_none_to_head_nothing_to_delete_and_refused_to_read(
    store: ObjectStore, prefix: str
) -> None:
    key = f"{prefix}never-written"
    assert await store.head(key) is None
    await store.delete(key)
    await store.delete(key)
    with pytest.raises(StorageRefused) as ranged:
        await store.read_range(key, start=0, length=16)
    with pytest.raises(StorageRefused) as streamed:
        await asyncio.to_thread(read_all, store, key, chunk_bytes=1024)
    for refused in (ranged.value, streamed.value):
        assert (refused.storage_code, refused.http_status) == ("NoSuchKey", 404)
        assert refused.reason == "STORAGE_UNAVAILABLE"
        assert key in refused.message


async def test_a_deleted_object_is_gone(store: ObjectStore, prefix: str) -> None:
    key = f"{prefix}deleted"
    await store.put(key, b"short-lived", content_type=CONTENT_TYPE)
    await store.delete(key)
    assert await store.head(key) is None


async def test_objects_are_listed_in_key_order_a_page_at_a_time(store: ObjectStore, prefix: str) -> None:
    bodies = {f"{prefix}{name}": name.encode() * 3 for name in ("e", "a", "d", "b", "c")}
    for key, body in bodies.items():
        await store.put(key, body, content_type=CONTENT_TYPE)
    await store.put(f"{prefix.rstrip('/')}-elsewhere", b"not under the prefix", content_type=CONTENT_TYPE)
    try:
        pages = [page async for page in store.list_objects(prefix, page_size=2)]
    finally:
        await store.delete(f"{prefix.rstrip('/')}-elsewhere")

    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [item for page in pages for item in page]
    assert [item.key for item in listed] == sorted(bodies)
    for item in listed:
        assert item.size == len(bodies[item.key])
        assert item.etag == hashlib.md5(bodies[item.key]).hexdigest()
        assert item.last_modified.tzinfo is not None


async def test_a_multipart_upload_sent_through_signed_part_urls_completes_once(
    store: ObjectStore, prefix: str
) -> None:
    key = f"{prefix}multipart"
    first, last = os.urandom(5 * MIB), os.urandom(1000)
    upload_id = await store.create_multipart(key, content_type=CONTENT_TYPE)
    other_id = await store.create_multipart(f"{prefix}other", content_type=CONTENT_TYPE)

    pages = [page async for page in store.list_multipart_uploads(prefix, page_size=1)]
    assert max(len(page) for page in pages) == 1
    open_uploads = {(upload.key, upload.upload_id): upload for page in pages for upload in page}
    assert set(open_uploads) == {(key, upload_id), (f"{prefix}other", other_id)}
    assert open_uploads[(key, upload_id)].initiated.tzinfo is not None

    bodies = {1: first, 2: last}
    signed_parts = store.presign_parts(
        key,
        upload_id=upload_id,
        parts=[PartToSign(number, len(body)) for number, body in bodies.items()],
        expires_s=300,
    )
    for body, signed in zip(bodies.values(), signed_parts, strict=True):
        assert (await send(signed.url, signed.headers, body)).status_code == 200
    parts = await store.list_parts(key, upload_id)
    assert parts is not None
    assert [(part.part_number, part.size) for part in parts] == [(1, len(first)), (2, len(last))]
    assert all(part.last_modified > 0 for part in parts)

    assert await store.complete_multipart(key, upload_id, parts, {})
    head = await store.head(key)
    assert head is not None
    assert head.size == len(first) + len(last)
    assert b"".join(await asyncio.to_thread(read_all, store, key, chunk_bytes=MIB)) == first + last
    # Completed: storage holds no parts any more; completing again (SeaweedFS answers it as a
    # success, AWS S3 as NoSuchUpload) and aborting are no errors either way.
    assert await store.list_parts(key, upload_id) is None
    await store.complete_multipart(key, upload_id, parts, {})
    await store.abort_multipart(key, upload_id)
    assert (await store.head(key)) == head


async def test_an_aborted_upload_is_forgotten_and_nothing_more_can_complete_it(
    store: ObjectStore, prefix: str
) -> None:
    key = f"{prefix}aborted"
    upload_id = await store.create_multipart(key, content_type=CONTENT_TYPE)
    (signed,) = store.presign_parts(key, upload_id=upload_id, parts=[PartToSign(1, 3)], expires_s=300)
    assert (await send(signed.url, signed.headers, b"abc")).status_code == 200
    parts = await store.list_parts(key, upload_id)
    assert parts is not None
    assert await store.abort_multipart(key, upload_id) is True
    await store.abort_multipart(key, upload_id)  # again: no error
    assert await store.list_parts(key, upload_id) is None
    assert await store.complete_multipart(key, upload_id, parts, {}) is False
    assert await store.head(key) is None
    assert [upload async for page in store.list_multipart_uploads(prefix) for upload in page] == []


async def test_a_part_checksum_storage_refuses_at_completion_is_checksum_mismatch(
    store: ObjectStore, prefix: str
) -> None:
    key = f"{prefix}checksummed"
    body = os.urandom(4096)
    upload_id = await store.create_multipart(key, content_type=CONTENT_TYPE, checksum_algorithm="sha256")
    right = PartChecksum("sha256", hashlib.sha256(body).hexdigest())
    (signed,) = store.presign_parts(
        key, upload_id=upload_id, parts=[PartToSign(1, len(body), right)], expires_s=300
    )
    assert (await send(signed.url, signed.headers, body)).status_code == 200
    parts = await store.list_parts(key, upload_id)
    assert parts is not None

    wrong = PartChecksum("sha256", hashlib.sha256(b"other bytes").hexdigest())
    with pytest.raises(FailedPrecondition) as refused:
        await store.complete_multipart(key, upload_id, parts, {1: wrong})
    assert refused.value.reason == "CHECKSUM_MISMATCH"
    assert await store.head(key) is None
    assert await store.complete_multipart(key, upload_id, parts, {1: right}) is True


async def test_a_refusal_is_storage_refused_with_storage_s_code(stack: Stack, prefix: str) -> None:
    config = admin_store(stack).config
    read_only = ObjectStore(
        dataclasses.replace(
            config,
            name="download",
            credentials=StoreCredentials(*stack.endpoints.credentials.service_s3_keys["download"]),
        )
    )
    with pytest.raises(StorageRefused) as denied:
        await read_only.put(f"{prefix}denied", b"x", content_type=CONTENT_TYPE)
    assert (denied.value.storage_code, denied.value.http_status) == ("AccessDenied", 403)
    assert isinstance(denied.value, Unavailable)

    elsewhere = ObjectStore(dataclasses.replace(config, bucket=f"no-such-bucket-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(StorageRefused) as missing:
        await elsewhere.check_bucket()
    assert missing.value.http_status == 404
    await admin_store(stack).check_bucket()


async def test_urls_for_clients_name_the_public_endpoint_and_urls_for_tools_the_service_s_own(
    store: ObjectStore, prefix: str
) -> None:
    key = f"{prefix}signed"
    await store.put(key, b"signed bytes", content_type=CONTENT_TYPE)
    behind_a_proxy = ObjectStore(
        dataclasses.replace(store.config, public_endpoint="https://files.example.test")
    )
    assert behind_a_proxy.presign_get(key, expires_s=60).url.startswith("https://files.example.test/")
    assert behind_a_proxy.presign_put(key, content_type=CONTENT_TYPE, size=1, expires_s=60).url.startswith(
        "https://files.example.test/"
    )
    internal = behind_a_proxy.internal_get_url(key, expires_s=60)
    assert internal.startswith(f"{store.config.endpoint}/")

    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(internal)).content == b"signed bytes"
        signed = store.presign_get(
            key, expires_s=60, response_content_type="text/plain", response_content_disposition="attachment"
        )
        answer = await http.get(signed.url)
    assert answer.content == b"signed bytes"
    assert answer.headers["content-type"] == "text/plain"
    assert answer.headers["content-disposition"] == "attachment"


async def test_two_stores_are_two_values_that_never_see_each_other_s_objects(
    stack: Stack, store: ObjectStore, prefix: str
) -> None:
    second_bucket = f"second-{uuid.uuid4().hex[:10]}"
    operator = admin_storage(stack)
    await asyncio.to_thread(operator.create_bucket, Bucket=second_bucket)
    second = ObjectStore(dataclasses.replace(store.config, name="second", bucket=second_bucket))
    key = f"{prefix}same-key"
    try:
        await second.check_bucket()
        await store.put(key, b"in the first store", content_type=CONTENT_TYPE)
        await second.put(key, b"in the second store, longer", content_type=CONTENT_TYPE)
        assert await store.read_range(key, start=0, length=100) == b"in the first store"
        assert await second.read_range(key, start=0, length=100) == b"in the second store, longer"
        await second.delete(key)
        assert await second.head(key) is None
        assert await store.head(key) is not None
    finally:
        await second.delete(key)
        await asyncio.to_thread(operator.delete_bucket, Bucket=second_bucket)


async def test_bucket_cors_rules_are_replaced_and_no_origins_means_none_allowed(
    stack: Stack, store: ObjectStore
) -> None:
    operator = admin_storage(stack)
    async with bucket_cors_kept(stack):
        assert await store.apply_cors(["https://app.example.com"]) is True
        rules = (await asyncio.to_thread(operator.get_bucket_cors, Bucket=store.bucket))["CORSRules"]
        assert [rule["AllowedOrigins"] for rule in rules] == [["https://app.example.com"]]
        assert rules[0]["ExposeHeaders"] == ["ETag"]
        await store.apply_cors(())
        rules = (await asyncio.to_thread(operator.get_bucket_cors, Bucket=store.bucket))["CORSRules"]
        assert [rule["AllowedOrigins"] for rule in rules] == [[CORS_DENY_ALL_ORIGIN]]


def test_a_store_config_is_made_from_the_settings_and_keeps_its_secret_out_of_its_repr() -> None:
    settings = S3Settings(
        endpoint="http://storage.internal:8333",
        public_endpoint="https://files.example.test",
        region="eu-west-1",
        access_key="the-access-key",
        secret_key="the-secret-key",
        bucket="files",
        control_timeout_s=2.0,
        read_timeout_s=30.0,
    )
    config = StoreConfig.from_settings(settings)
    assert config == StoreConfig(
        name="default",
        endpoint="http://storage.internal:8333",
        public_endpoint="https://files.example.test",
        region="eu-west-1",
        bucket="files",
        credentials=StoreCredentials("the-access-key", "the-secret-key"),
        control_timeout_s=2.0,
        read_timeout_s=30.0,
    )
    assert "the-access-key" in repr(config)
    assert "the-secret-key" not in repr(config)
    assert "the-secret-key" not in repr(ObjectStore(config))
