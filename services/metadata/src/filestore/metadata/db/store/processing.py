"""What one run of the pipeline does to the catalogue: the claim that starts it (:func:`claim_file`),
the verified content that makes a file's bytes a dedup target or quarantines it
(:func:`record_verified_content`), and step outcomes that are settled once per processing of a file
(:func:`record_step_outcome`).

Builds on :mod:`.files` (the lifecycle), :mod:`.blobs` (dedup) and :mod:`.results` (the rows); none of
them imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.errors import Aborted, FailedPrecondition
from filestore.core.reasons import Reason
from filestore.metadata.db.models import File, FileColumns, FileStatus, ProcessingOutcome, ProcessingResult
from filestore.metadata.db.store._sql import _CAS_ATTEMPTS, _load_file
from filestore.metadata.db.store.blobs import link_file_blob, register_blob
from filestore.metadata.db.store.files import _transition, update_file_facts
from filestore.metadata.db.store.results import get_processing_result, set_processing_result

__all__ = [
    "SETTLED_OUTCOMES",
    "FileClaim",
    "VerifiedContent",
    "claim_file",
    "record_step_outcome",
    "record_verified_content",
]

#: Outcomes a step keeps for the rest of a processing of its file (until ReprocessFile clears them).
SETTLED_OUTCOMES = frozenset({ProcessingOutcome.PASSED, ProcessingOutcome.SKIPPED})


@dataclass(frozen=True, slots=True)
class FileClaim:
    file: FileColumns
    #: Whether this call moved the file UPLOADED -> PROCESSING (of concurrent claims, one wins).
    claimed: bool


async def claim_file(session: AsyncSession, *, tenant: str | None, file_id: str) -> FileClaim:
    """Move an UPLOADED file to PROCESSING; a file in any other state is answered unchanged.

    Compare-and-set on the version read here: when another transaction moved the file in between,
    the move fails and the file is read again, so two claims never both answer ``claimed``.
    """
    for _ in range(_CAS_ATTEMPTS):
        file = await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=True)
        if file.status != FileStatus.UPLOADED:
            return FileClaim(file=file, claimed=False)
        try:
            moved, _ = await _transition(
                session,
                tenant=tenant,
                file_id=file_id,
                to_status=FileStatus.PROCESSING,
                reason=None,
                expected_version=file.version,
            )
        except Aborted as error:
            # Changed since it was read: claimed elsewhere, or an UPLOADED file edited (renamed,
            # relabelled), which is worth another look.
            if error.reason != Reason.ETAG_MISMATCH:
                raise
            continue
        return FileClaim(file=moved, claimed=True)
    raise Aborted(
        "the file is being changed concurrently; retry",
        reason=Reason.CONCURRENT_MODIFICATION,
        metadata={"file_id": file_id},
    )


@dataclass(frozen=True, slots=True)
class VerifiedContent:
    file: File
    #: Whether the verified bytes matched what the file declared (digest, if any, and size).
    matched: bool
    #: Whether this call deduplicated the file onto content the tenant held before.
    deduplicated: bool
    #: The file's own object, when it became garbage: delete it from storage after the commit.
    orphaned_storage_keys: list[str]


async def record_verified_content(
    session: AsyncSession, *, tenant: str | None, file_id: str, sha256: str, size: int
) -> VerifiedContent:
    """Record the digest and size read from a file's stored bytes.

    A match (with the declared digest, when one was declared, and the size) makes the content a
    verified blob of the tenant, a dedup target; when the tenant already holds it in another object,
    the file shares that copy (:func:`.blobs.link_file_blob`) and its own object becomes garbage. A
    mismatch never becomes a blob, and quarantines a PROCESSING file. Recording the same digest again
    changes nothing more.
    """
    file = await _load_file(session, tenant=tenant, file_id=file_id, include_deleted=True)
    matched = (not file.sha256 or file.sha256 == sha256) and size == file.size
    file = await update_file_facts(session, tenant=tenant, file_id=file.id, verified_sha256=sha256)
    orphaned: list[str] = []
    deduplicated = False
    if matched and file.blob_id is None:
        blob = await register_blob(
            session,
            tenant=file.tenant,
            sha256=sha256,
            size=size,
            storage_key=file.storage_key,
            store=file.store,
        )
        # Read before the link: the session maps the row to one object, which the link updates.
        own_key = file.storage_key
        link = await link_file_blob(session, tenant=file.tenant, file_id=file.id, blob_id=blob.id)
        deduplicated = link.file.storage_key != own_key
        file = link.file
        orphaned.extend(link.orphaned_storage_keys)
    elif not matched and file.status == FileStatus.PROCESSING:
        file, _ = await _transition(
            session,
            tenant=tenant,
            file_id=file.id,
            to_status=FileStatus.QUARANTINED,
            reason="CHECKSUM_MISMATCH" if file.sha256 != sha256 else "SIZE_MISMATCH",
            expected_version=None,
        )
    return VerifiedContent(
        file=file, matched=matched, deduplicated=deduplicated, orphaned_storage_keys=orphaned
    )


async def record_step_outcome(
    session: AsyncSession,
    *,
    tenant: str | None,
    file_id: str,
    step: str,
    outcome: ProcessingOutcome,
    details: Mapping[str, Any] | None = None,
) -> ProcessingResult:
    """Record a step's outcome once per processing of the file: a settled outcome (PASSED or SKIPPED)
    stays. The same outcome again answers the stored row unchanged; another one raises
    ``FailedPrecondition(reason=Reason.STEP_ALREADY_SETTLED)``. Unsettled outcomes are replaced."""
    recorded = await get_processing_result(session, tenant=tenant, file_id=file_id, step=step)
    if recorded is not None and recorded.outcome in SETTLED_OUTCOMES:
        if recorded.outcome == outcome:
            return recorded
        raise FailedPrecondition(
            f"the {step} step is settled as {recorded.outcome} already",
            reason=Reason.STEP_ALREADY_SETTLED,
            metadata={"file_id": file_id, "step": step, "outcome": str(recorded.outcome)},
        )
    return await set_processing_result(
        session, tenant=tenant, file_id=file_id, step=step, outcome=outcome, details=details
    )
