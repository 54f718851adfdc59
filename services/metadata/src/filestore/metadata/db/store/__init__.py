"""Data access for the metadata service: the only code that writes the catalogue.

Conventions shared by every function here:

* The caller owns the transaction (``async with session.begin(): ...``); nothing here commits, so one
  RPC's writes land or vanish together. A raised error leaves the transaction to be rolled back.
* A function taking an :data:`Executor` runs Core statements only (on tables, rows back) and works on
  an ORM session or a plain connection alike; it answers Rows read by column name, or the values it
  wrote (:class:`~filestore.metadata.db.models.FileValues`), never ORM objects. The hot RPCs use only
  these. The file lifecycle and the listings stay ORM code and take an ``AsyncSession``.
* ``tenant`` scopes every lookup. A row of another tenant is reported exactly like a missing row
  (``NotFound``), so ids of other tenants cannot be probed. ``tenant=None`` is reserved for trusted
  internal callers (the processor acting for any tenant) and must never come from a client.
* Concurrency is handled with conditional UPDATEs (compare-and-set on a row's state or version), so
  the same code is correct on PostgreSQL (row locks, READ COMMITTED re-check) and on SQLite (one
  writer at a time, see :func:`filestore.metadata.db.engine.create_engine`).
* Failures are typed :mod:`filestore.core.errors` with stable ``reason`` values.

One module per resource, and this package's face re-exports them all (``store.get_file(...)``):

* :mod:`.files`: files, the lifecycle (:func:`transition_file`, :func:`delete_file`,
  :func:`quarantine_content`) and listing;
* :mod:`.blobs`: verified content shared between a tenant's files (dedup) and its reference count;
* :mod:`.uploads`: upload sessions, closed exactly once, and the reaper's leases;
* :mod:`.grants`: permissions on a file and :func:`is_permitted`;
* :mod:`.results`: derivatives and processing results;
* :mod:`.processing`: one run of the pipeline: the claim, verified content, settled step outcomes;
* :mod:`.quotas`: reservations, usage and limits;
* :mod:`.placement`: tenants' residency (which stores their bytes may live in) and files' replicas;
* :mod:`.idempotency`: stored first answers to replayed requests;
* :mod:`._sql`: what they share (value checks, dialect helpers, the compare-and-set budget, the file
  lookup).

Each table is written by its own module (except that :func:`.blobs.link_file_blob` points a file at
its blob), and imports point one way: :mod:`.uploads` builds on :mod:`.files`, whose lifecycle builds
on :mod:`.blobs`, :mod:`.quotas` and :mod:`.results`; those, :mod:`.grants` and :mod:`.idempotency`
need only :mod:`._sql`; :mod:`.processing` builds on :mod:`.files`, :mod:`.blobs` and :mod:`.results`.

The reconciler (:mod:`filestore.metadata.fsck`) reads the catalogue itself but repairs it only through
functions here, each in the module of the table it writes: :func:`.files.fail_file_without_object`,
:func:`.blobs.recount_blob_references`, :func:`.blobs.forget_blob_without_object`,
:func:`.results.drop_parentless_derivative` and :func:`.results.drop_derivative_without_object`. They
act by primary key for every tenant (a trusted caller), and each re-checks, in its own statement, the
condition the reconciler found, so a finding that stopped holding changes nothing.
"""

from __future__ import annotations

from filestore.metadata.db.store._sql import Executor, KeysetCursor, has_prefix
from filestore.metadata.db.store.blobs import (
    BlobLink,
    BlobRecount,
    find_dedup_blob,
    forget_blob_without_object,
    get_blob,
    link_file_blob,
    live_reference_count,
    needs_refcount_repair,
    recount_blob_references,
    register_blob,
)
from filestore.metadata.db.store.files import (
    MAX_PAGE_SIZE,
    STATES_WITH_BYTES,
    FileDeletion,
    FileFilter,
    FilePage,
    allowed_sources,
    create_file,
    delete_file,
    fail_file_without_object,
    get_file,
    list_files,
    quarantine_content,
    transition_file,
    update_file,
    update_file_facts,
)
from filestore.metadata.db.store.grants import (
    create_grant,
    get_grant,
    is_permitted,
    list_grants,
    revoke_grant,
)
from filestore.metadata.db.store.idempotency import (
    IdempotentSave,
    get_idempotent,
    purge_idempotency_keys,
    save_idempotent,
)
from filestore.metadata.db.store.placement import (
    Residency,
    choose_store,
    get_residency,
    list_replicas,
    mark_replica_missing,
    record_replica,
    set_residency,
)
from filestore.metadata.db.store.processing import (
    SETTLED_OUTCOMES,
    FileClaim,
    VerifiedContent,
    claim_file,
    record_step_outcome,
    record_verified_content,
)
from filestore.metadata.db.store.quotas import (
    get_quota,
    refund_quota,
    release_quota,
    reserve_quota,
    set_quota,
    settle_quota,
)
from filestore.metadata.db.store.results import (
    add_derivative,
    drop_derivative_without_object,
    drop_parentless_derivative,
    get_derivative,
    get_processing_result,
    list_derivatives,
    list_processing_results,
    set_processing_result,
)
from filestore.metadata.db.store.uploads import (
    MAX_UPLOAD_PAGE_SIZE,
    OpenUploadPage,
    UploadOutcome,
    attached_storage_uploads,
    claim_expired_uploads,
    complete_upload,
    end_upload,
    get_upload,
    list_open_uploads,
    list_uploads,
    record_upload,
    set_upload_state,
)

__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_UPLOAD_PAGE_SIZE",
    "SETTLED_OUTCOMES",
    "STATES_WITH_BYTES",
    "BlobLink",
    "BlobRecount",
    "Executor",
    "FileClaim",
    "FileDeletion",
    "FileFilter",
    "FilePage",
    "IdempotentSave",
    "KeysetCursor",
    "OpenUploadPage",
    "Residency",
    "UploadOutcome",
    "VerifiedContent",
    "add_derivative",
    "allowed_sources",
    "attached_storage_uploads",
    "choose_store",
    "claim_expired_uploads",
    "claim_file",
    "complete_upload",
    "create_file",
    "create_grant",
    "delete_file",
    "drop_derivative_without_object",
    "drop_parentless_derivative",
    "end_upload",
    "fail_file_without_object",
    "find_dedup_blob",
    "forget_blob_without_object",
    "get_blob",
    "get_derivative",
    "get_file",
    "get_grant",
    "get_idempotent",
    "get_processing_result",
    "get_quota",
    "get_residency",
    "get_upload",
    "has_prefix",
    "is_permitted",
    "link_file_blob",
    "list_derivatives",
    "list_files",
    "list_grants",
    "list_open_uploads",
    "list_processing_results",
    "list_replicas",
    "list_uploads",
    "live_reference_count",
    "mark_replica_missing",
    "needs_refcount_repair",
    "purge_idempotency_keys",
    "quarantine_content",
    "record_replica",
    "record_step_outcome",
    "record_upload",
    "record_verified_content",
    "recount_blob_references",
    "refund_quota",
    "register_blob",
    "release_quota",
    "reserve_quota",
    "revoke_grant",
    "save_idempotent",
    "set_processing_result",
    "set_quota",
    "set_residency",
    "set_upload_state",
    "settle_quota",
    "transition_file",
    "update_file",
    "update_file_facts",
]
