"""Files through MetadataService against the real stack, on SQLite and on PostgreSQL: create and get,
update under a field mask and an etag, delete; a refused call changes no row (read from the database
itself, before and after)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2
from tests.catalogue import catalogue_snapshot, create_file, refused_without_change
from tests.support import Client, rpc_error

Status = resources_pb2.FileStatus
Code = grpc.StatusCode


@pytest.fixture
async def plan(alice: Client) -> resources_pb2.File:
    """alice's file, as CreateFile answered it."""
    return await create_file(
        alice.metadata, name="Plan.pdf", content_type="application/pdf", size=1234, labels={"team": "blue"}
    )


async def rename(client: Client, file: resources_pb2.File, name: str) -> resources_pb2.File:
    renamed: resources_pb2.File = await client.metadata.UpdateFile(
        pb.UpdateFileRequest(
            file=resources_pb2.File(id=file.id, name=name), update_mask=FieldMask(paths=["name"])
        )
    )
    return renamed


# ------------------------------------------------------------------------------------ create, get


async def test_a_created_file_belongs_to_its_caller_and_is_pending(
    plan: resources_pb2.File, tenant: str
) -> None:
    assert (plan.tenant, plan.owner, plan.status) == (tenant, "alice", Status.FILE_STATUS_PENDING)


async def test_a_created_file_keeps_what_was_declared(plan: resources_pb2.File) -> None:
    assert (plan.name, plan.declared_content_type, plan.size) == (
        "Plan.pdf",
        "application/pdf",
        1234,
    )
    assert dict(plan.labels) == {"team": "blue"}


async def test_a_created_file_is_private(plan: resources_pb2.File) -> None:
    assert plan.visibility == resources_pb2.VISIBILITY_PRIVATE


async def test_a_created_file_has_an_etag_and_a_creation_time_and_no_deletion_time(
    plan: resources_pb2.File,
) -> None:
    assert plan.etag
    assert plan.HasField("create_time")
    assert not plan.HasField("delete_time")


async def test_get_answers_the_file_as_created(alice: Client, plan: resources_pb2.File) -> None:
    assert await alice.metadata.GetFile(pb.GetFileRequest(file_id=plan.id)) == plan


# ------------------------------------------------------------------------------------ update


async def test_an_update_changes_only_the_fields_its_mask_names(
    alice: Client, plan: resources_pb2.File
) -> None:
    # The labels and the size sent along with the new name are ignored.
    renamed = await alice.metadata.UpdateFile(
        pb.UpdateFileRequest(
            file=resources_pb2.File(id=plan.id, name="Plan v2.pdf", labels={"team": "red"}, size=1),
            update_mask=FieldMask(paths=["name"]),
        )
    )
    assert (renamed.name, dict(renamed.labels), renamed.size) == ("Plan v2.pdf", {"team": "blue"}, 1234)


async def test_an_update_gives_the_file_a_new_etag_and_update_time(
    alice: Client, plan: resources_pb2.File
) -> None:
    renamed = await rename(alice, plan, "Plan v2.pdf")
    assert renamed.etag != plan.etag
    assert renamed.update_time.ToDatetime() >= plan.update_time.ToDatetime()


async def test_the_catalogue_snapshot_sees_an_update(
    stack: Stack, alice: Client, plan: resources_pb2.File, tenant: str
) -> None:
    """The "changes nothing" checks of every refusal could fail: their snapshot does see a change."""
    before = await catalogue_snapshot(stack, tenant)
    await rename(alice, plan, "Plan v2.pdf")
    assert await catalogue_snapshot(stack, tenant) != before


async def test_an_update_with_the_current_etag_changes_every_masked_field(
    alice: Client, plan: resources_pb2.File
) -> None:
    renamed = await rename(alice, plan, "Plan v2.pdf")
    both = await alice.metadata.UpdateFile(
        pb.UpdateFileRequest(
            file=resources_pb2.File(
                id=plan.id,
                etag=renamed.etag,
                labels={"team": "red"},
                visibility=resources_pb2.VISIBILITY_PUBLIC,
            ),
            update_mask=FieldMask(paths=["labels", "visibility"]),
        )
    )
    assert (both.name, dict(both.labels), both.visibility) == (
        "Plan v2.pdf",
        {"team": "red"},
        resources_pb2.VISIBILITY_PUBLIC,
    )


async def test_an_update_with_a_stale_etag_is_aborted_and_names_the_current_one(
    stack: Stack, alice: Client, plan: resources_pb2.File, tenant: str
) -> None:
    # The file changed since it was read: the update would lose that change.
    renamed = await rename(alice, plan, "Plan v2.pdf")
    stale = await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.UpdateFile(
            pb.UpdateFileRequest(
                file=resources_pb2.File(id=plan.id, etag=plan.etag, name="lost update.pdf"),
                update_mask=FieldMask(paths=["name"]),
            )
        ),
        Code.ABORTED,
        "ETAG_MISMATCH",
    )
    assert stale.metadata["etag"] == renamed.etag


async def test_a_delete_with_a_stale_etag_is_aborted(
    stack: Stack, alice: Client, plan: resources_pb2.File, tenant: str
) -> None:
    await rename(alice, plan, "Plan v2.pdf")
    await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=plan.id, etag=plan.etag)),
        Code.ABORTED,
        "ETAG_MISMATCH",
    )


# ------------------------------------------------------------------------------------ delete


@pytest.fixture
async def deleted(alice: Client, plan: resources_pb2.File) -> resources_pb2.File:
    """alice's file, deleted by her with its current etag, as DeleteFile answered it."""
    answer: resources_pb2.File = await alice.metadata.DeleteFile(
        pb.DeleteFileRequest(file_id=plan.id, etag=plan.etag)
    )
    return answer


async def test_a_delete_marks_the_file_deleted(deleted: resources_pb2.File) -> None:
    assert deleted.status == Status.FILE_STATUS_DELETED
    assert deleted.HasField("delete_time")


async def test_a_deleted_file_is_not_found(alice: Client, deleted: resources_pb2.File) -> None:
    gone = await rpc_error(alice.metadata.GetFile(pb.GetFileRequest(file_id=deleted.id)))
    assert (gone.code, gone.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")


async def test_a_deleted_file_is_kept_as_it_was_for_whoever_asks_for_deleted_files(
    alice: Client, plan: resources_pb2.File
) -> None:
    renamed = await rename(alice, plan, "Plan v2.pdf")
    await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=plan.id, etag=renamed.etag))
    kept = await alice.metadata.GetFile(pb.GetFileRequest(file_id=plan.id, include_deleted=True))
    assert kept.status == Status.FILE_STATUS_DELETED
    assert kept.name == "Plan v2.pdf"


async def test_deleting_a_deleted_file_changes_nothing(alice: Client, deleted: resources_pb2.File) -> None:
    again = await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=deleted.id))
    assert again.etag == deleted.etag


async def test_a_deleted_file_no_longer_lists(alice: Client, deleted: resources_pb2.File) -> None:
    assert list((await alice.metadata.ListFiles(pb.ListFilesRequest())).files) == []


async def test_a_deleted_file_can_no_longer_be_updated(alice: Client, deleted: resources_pb2.File) -> None:
    error = await rpc_error(
        alice.metadata.UpdateFile(
            pb.UpdateFileRequest(
                file=resources_pb2.File(id=deleted.id, name="x.pdf"), update_mask=FieldMask(paths=["name"])
            )
        )
    )
    assert (error.code, error.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
