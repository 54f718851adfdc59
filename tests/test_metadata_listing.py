"""ListFiles against the real stack, on SQLite and on PostgreSQL: each filter lists exactly the files it
matches, newest first; keyset pagination neither repeats nor skips a file while rows arrive and leave;
page tokens are opaque, tamper-proof and bound to their filters and tenant."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2
from tests.catalogue import create_file, list_all, move, refused_without_change
from tests.support import Client, ClientFactory, rpc_error

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Status = resources_pb2.FileStatus
Code = grpc.StatusCode


def newest_first(files: list[resources_pb2.File]) -> list[str]:
    ordered = sorted(files, key=lambda f: (f.create_time.seconds, f.create_time.nanos, f.id), reverse=True)
    return [f.id for f in ordered]


# ------------------------------------------------------------------------------------ filters


@dataclass
class Catalogue:
    """Eight files of three owners in one tenant, f0 the oldest: f5 deleted, f6 READY, f7 UPLOADED,
    the others PENDING."""

    tenant: str
    files: dict[str, resources_pb2.File]

    def expect(self, keep: Callable[[resources_pb2.File], bool]) -> list[str]:
        return newest_first([f for f in self.files.values() if keep(f)])

    def ids(self, *labels: str) -> list[str]:
        return [self.files[label].id for label in labels]


@pytest.fixture
async def catalogue(service_metadata: MetadataStub, tenant: str) -> Catalogue:
    specs: list[tuple[str, str, str, str, dict[str, str]]] = [
        ("f0", "alice", "Report-2024.pdf", "application/pdf", {"project": "apollo", "kind": "report"}),
        ("f1", "alice", "report-lower.pdf", "application/pdf", {"project": "gemini"}),
        ("f2", "bob", "photo.png", "image/png", {"project": "apollo"}),
        ("f3", "bob", "photo2.jpeg", "image/jpeg", {}),
        ("f4", "alice", "notes.txt", "text/plain", {"project": "apollo", "kind": "notes"}),
        ("f5", "alice", "Report-draft.pdf", "application/pdf", {"project": "apollo", "kind": "report"}),
        ("f6", "bob", "scan.png", "image/png", {}),
        ("f7", "carol", "video.mp4", "video/mp4", {"project": "apollo"}),
    ]
    files: dict[str, resources_pb2.File] = {}
    for label, owner, name, content_type, labels in specs:  # one by one: creation times in this order
        files[label] = await create_file(
            service_metadata, name=name, content_type=content_type, labels=labels, tenant=tenant, owner=owner
        )
    files["f5"] = await service_metadata.DeleteFile(
        pb.DeleteFileRequest(file_id=files["f5"].id, tenant=tenant)
    )
    ready = (Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_PROCESSING, Status.FILE_STATUS_READY)
    files["f6"] = await move(service_metadata, files["f6"], *ready)
    files["f7"] = await move(service_metadata, files["f7"], Status.FILE_STATUS_UPLOADED)
    return Catalogue(tenant, files)


async def listed(service: MetadataStub, catalogue: Catalogue, **fields: Any) -> list[str]:
    """The ids a service lists in the catalogue's tenant."""
    return [
        file.id for file in await list_all(service, pb.ListFilesRequest(tenant=catalogue.tenant, **fields))
    ]


async def test_a_listing_answers_every_live_file_newest_first(
    service_metadata: MetadataStub, catalogue: Catalogue
) -> None:
    everything = await listed(service_metadata, catalogue)
    assert everything == catalogue.expect(lambda x: x.status != Status.FILE_STATUS_DELETED)
    assert len(everything) == 7


async def test_a_listing_answers_the_same_order_every_time(
    service_metadata: MetadataStub, catalogue: Catalogue
) -> None:
    everything = await listed(service_metadata, catalogue)
    assert await listed(service_metadata, catalogue) == everything


Filters = Callable[[Catalogue], dict[str, Any]]
Expected = Callable[[Catalogue], list[str]]
FILTERS: list[tuple[str, Filters, Expected]] = [
    ("owner", lambda c: {"owner": "bob"}, lambda c: c.expect(lambda x: x.owner == "bob")),
    ("status", lambda c: {"statuses": [Status.FILE_STATUS_READY]}, lambda c: c.ids("f6")),
    ("status-deleted", lambda c: {"statuses": [Status.FILE_STATUS_DELETED]}, lambda c: c.ids("f5")),
    (
        "statuses",
        lambda c: {"statuses": [Status.FILE_STATUS_READY, Status.FILE_STATUS_UPLOADED]},
        lambda c: c.ids("f7", "f6"),
    ),
    ("content-type-prefix", lambda c: {"content_type_prefix": "image/"}, lambda c: c.ids("f6", "f3", "f2")),
    ("content-type-part", lambda c: {"content_type_prefix": "application/pd"}, lambda c: c.ids("f1", "f0")),
    # At or after f2's creation, before f6's.
    (
        "created-range",
        lambda c: {"created_after": c.files["f2"].create_time, "created_before": c.files["f6"].create_time},
        lambda c: c.ids("f4", "f3", "f2"),
    ),
    ("label", lambda c: {"labels": {"project": "apollo"}}, lambda c: c.ids("f7", "f4", "f2", "f0")),
    ("labels", lambda c: {"labels": {"project": "apollo", "kind": "report"}}, lambda c: c.ids("f0")),
    ("label-value-case", lambda c: {"labels": {"project": "Apollo"}}, lambda c: []),
    # Name prefixes are case-sensitive.
    ("name-prefix-upper", lambda c: {"name_prefix": "Report"}, lambda c: c.ids("f0")),
    ("name-prefix-lower", lambda c: {"name_prefix": "report"}, lambda c: c.ids("f1")),
    ("name-prefix", lambda c: {"name_prefix": "photo"}, lambda c: c.ids("f3", "f2")),
    (
        "combined",
        lambda c: {"owner": "alice", "content_type_prefix": "application/", "labels": {"project": "apollo"}},
        lambda c: c.ids("f0"),
    ),
]


@pytest.mark.parametrize(
    ("filters", "expected"), [case[1:] for case in FILTERS], ids=[case[0] for case in FILTERS]
)
async def test_a_filter_lists_exactly_the_files_it_matches_newest_first(
    service_metadata: MetadataStub, catalogue: Catalogue, filters: Filters, expected: Expected
) -> None:
    assert await listed(service_metadata, catalogue, **filters(catalogue)) == expected(catalogue)


async def test_a_user_lists_their_own_files(client_for: ClientFactory, catalogue: Catalogue) -> None:
    alice = client_for("alice", catalogue.tenant)
    mine = await list_all(alice.metadata, pb.ListFilesRequest())
    assert [x.id for x in mine] == catalogue.expect(
        lambda x: x.owner == "alice" and x.status != Status.FILE_STATUS_DELETED
    )


async def test_a_user_naming_another_owner_is_refused(
    client_for: ClientFactory, catalogue: Catalogue
) -> None:
    # Naming another owner does not reveal that owner's private files.
    alice = client_for("alice", catalogue.tenant)
    nosy = await rpc_error(alice.metadata.ListFiles(pb.ListFilesRequest(owner="bob")))
    assert (nosy.code, nosy.reason) == (Code.INVALID_ARGUMENT, "INVALID_FILTER")


async def test_a_user_may_name_themselves_as_the_owner(
    client_for: ClientFactory, catalogue: Catalogue
) -> None:
    alice = client_for("alice", catalogue.tenant)
    own = await list_all(alice.metadata, pb.ListFilesRequest(owner="alice", name_prefix="Report"))
    assert [x.id for x in own] == catalogue.ids("f0")


async def test_another_tenant_lists_none_of_them(client_for: ClientFactory, catalogue: Catalogue) -> None:
    stranger = client_for("alice", f"{catalogue.tenant}-other")
    assert list((await stranger.metadata.ListFiles(pb.ListFilesRequest())).files) == []


# ------------------------------------------------------------------------------------ pagination


@dataclass(frozen=True)
class Walk:
    """alice paged through her 55 files in pages of 3 to 11 while two new ones arrived after every page
    and one she had not reached yet was deleted."""

    listed: list[str]  # the ids the pages answered, in their order
    expected: list[str]  # the 55, newest first, before the walk
    removed: str
    late: int  # how many arrived during the walk
    everything: list[resources_pb2.File]  # a full listing after it


@pytest.fixture
async def fifty_five(client_for: ClientFactory, tenant: str) -> tuple[Client, list[resources_pb2.File]]:
    alice = client_for("alice", tenant)
    files = await asyncio.gather(*(create_file(alice.metadata, name=f"f{i}.txt") for i in range(55)))
    return alice, list(files)


@pytest.fixture
async def walk(
    service_metadata: MetadataStub, fifty_five: tuple[Client, list[resources_pb2.File]], tenant: str
) -> Walk:
    alice, originals = fifty_five
    expected = newest_first(originals)
    seen: list[resources_pb2.File] = []
    token = ""
    removed = ""
    late = 0
    page_sizes = iter([7, 7, 3, 11, 7, 7, 7, 7, 7, 7, 7])
    while True:
        page = await alice.metadata.ListFiles(
            pb.ListFilesRequest(page_size=next(page_sizes), page_token=token)
        )
        seen.extend(page.files)
        if not page.next_page_token:
            break
        token = page.next_page_token
        # Rows arrive while the client pages (newer than every position, so they belong before it)...
        await asyncio.gather(*(create_file(alice.metadata, name="late.txt") for _ in range(2)))
        late += 2
        if not removed:
            # ...and one not yet listed goes away: it must vanish without taking a neighbour with it.
            removed = expected[-5]
            await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=removed))
    everything = await list_all(service_metadata, pb.ListFilesRequest(tenant=tenant))
    return Walk([f.id for f in seen], expected, removed, late, everything)


async def test_the_default_page_holds_fifty_files_and_a_token_for_more(
    fifty_five: tuple[Client, list[resources_pb2.File]],
) -> None:
    alice, _ = fifty_five
    first = await alice.metadata.ListFiles(pb.ListFilesRequest())
    assert len(first.files) == 50
    assert first.next_page_token


async def test_paging_while_rows_arrive_lists_no_file_twice(walk: Walk) -> None:
    assert len(walk.listed) == len(set(walk.listed)), "a file was listed twice"


async def test_paging_while_rows_arrive_and_leave_skips_no_file_and_keeps_the_order(walk: Walk) -> None:
    assert walk.listed == [i for i in walk.expected if i != walk.removed], (
        "a file was skipped or the order changed"
    )


async def test_files_created_while_paging_are_all_there_afterwards(walk: Walk) -> None:
    assert len(walk.everything) == 55 - 1 + walk.late
    assert walk.late >= 10


async def test_a_listing_after_paging_is_newest_first(walk: Walk) -> None:
    assert [f.id for f in walk.everything] == newest_first(walk.everything)


# ------------------------------------------------------------------------------------ page tokens


@dataclass(frozen=True)
class FirstPage:
    """alice's first page of two of her five files labelled set=a, and the token for the next."""

    alice: Client
    page: pb.ListFilesResponse
    token: str

    def listing(self, page_token: str, **fields: Any) -> Awaitable[pb.ListFilesResponse]:
        fields.setdefault("labels", {"set": "a"})
        answer: Awaitable[pb.ListFilesResponse] = self.alice.metadata.ListFiles(
            pb.ListFilesRequest(page_size=2, page_token=page_token, **fields)
        )
        return answer


@pytest.fixture
async def first_page(client_for: ClientFactory, tenant: str) -> FirstPage:
    alice = client_for("alice", tenant)
    for i in range(5):
        await create_file(alice.metadata, name=f"doc{i}.txt", labels={"set": "a"})
    page = await alice.metadata.ListFiles(pb.ListFilesRequest(page_size=2, labels={"set": "a"}))
    return FirstPage(alice, page, page.next_page_token)


def decoded(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def flip_byte(token: str, index: int) -> str:
    raw = bytearray(decoded(token))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


async def test_a_page_token_does_not_show_the_position_in_clear_text(first_page: FirstPage) -> None:
    assert first_page.token
    assert first_page.page.files[-1].id not in first_page.token


async def test_the_next_page_starts_after_the_first(first_page: FirstPage) -> None:
    next_page = await first_page.listing(first_page.token)
    assert next_page.files[0].id not in [f.id for f in first_page.page.files]


FORGERIES: list[tuple[str, Callable[[str], str]]] = [
    ("in-the-signature", lambda token: flip_byte(token, 0)),
    ("in-the-signed-position", lambda token: flip_byte(token, len(decoded(token)) - 3)),
    ("truncated", lambda token: token[:-4]),
    ("not-a-token", lambda token: "not a token at all!"),
    (
        "unsigned-position",
        lambda token: base64.urlsafe_b64encode(
            b"\x00" * 16 + json.dumps({"p": {"c": "2000-01-01T00:00:00+00:00", "i": "z"}, "f": ""}).encode()
        ).decode(),
    ),
    ("huge", lambda token: "A" * 10_000),
]


@pytest.mark.parametrize("forge", [case[1] for case in FORGERIES], ids=[case[0] for case in FORGERIES])
async def test_a_tampered_page_token_is_refused_and_changes_nothing(
    stack: Stack, first_page: FirstPage, tenant: str, forge: Callable[[str], str]
) -> None:
    await refused_without_change(
        stack,
        (tenant,),
        first_page.listing(forge(first_page.token)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


@pytest.mark.parametrize(
    "other_filters",
    [{"labels": {"set": "b"}}, {"name_prefix": "doc"}, {"statuses": [Status.FILE_STATUS_PENDING]}],
    ids=["labels", "name-prefix", "statuses"],
)
async def test_a_page_token_is_refused_with_other_filters(
    first_page: FirstPage, other_filters: dict[str, Any]
) -> None:
    error = await rpc_error(first_page.listing(first_page.token, **other_filters))
    assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def test_a_page_token_is_refused_for_another_tenant(
    service_metadata: MetadataStub, first_page: FirstPage, tenant: str
) -> None:
    service_page = await service_metadata.ListFiles(pb.ListFilesRequest(tenant=tenant, page_size=2))
    error = await rpc_error(
        service_metadata.ListFiles(
            pb.ListFilesRequest(tenant=f"{tenant}-x", page_size=2, page_token=service_page.next_page_token)
        )
    )
    assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def test_the_page_size_may_change_between_pages(first_page: FirstPage) -> None:
    # The page size is not a filter (AIP-158).
    next_page = await first_page.listing(first_page.token)
    resized = await first_page.alice.metadata.ListFiles(
        pb.ListFilesRequest(page_size=3, page_token=first_page.token, labels={"set": "a"})
    )
    assert [f.id for f in resized.files] == [f.id for f in next_page.files] + [resized.files[2].id]
