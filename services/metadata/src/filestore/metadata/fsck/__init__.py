"""``filestore-fsck``: the reconciler. Compares the catalogue with storage and reports (or, with
``--repair``, fixes) every place where the two disagree.

What it looks for, and what ``--repair`` does about it (one module of :mod:`.checks` each):

``orphan_object``
    An object under ``originals/`` or ``derivatives/`` that no record needs: no live file, no blob and
    no derivative row has its key. Deleted.
``orphan_derivative``
    A derivative whose parent file is gone (DELETED, or no row at all): the derivative row and its
    object, or an object under ``derivatives/`` whose file is gone. Deleted; derivatives are regenerable.
``missing_object``
    A record whose bytes are not in storage. A file that is UPLOADED, PROCESSING or READY becomes
    FAILED with ``status_reason`` ``OBJECT_MISSING``: the record stays (the owner still sees the file,
    and why it cannot be downloaded; deleting it refunds the quota as usual), and nothing serves a URL
    to bytes that are not there. A blob row is deleted, so it stops being a dedup target (new uploads
    of the same content would otherwise share the lost bytes). A derivative row of a live file is
    deleted. PENDING files have no bytes yet; QUARANTINED and FAILED files are never served and their
    bytes may have been removed on purpose, so neither is checked.
``stale_multipart_upload``
    A multipart upload open in storage that no OPEN upload record owns (no record, or one already
    completed, aborted or expired). Aborted, which frees its parts. OPEN records, even expired ones,
    belong to the broker's reaper, which also releases their quota.
``refcount_drift``
    A blob whose ``ref_count`` differs from the number of live files pointing at it. Recomputed; a blob
    no live file points at is forgotten and its object deleted, as deleting its last file would have.

Safe while the stack is serving:

* A grace period (``FILESTORE_FSCK_GRACE_S``, default one hour) hides objects and multipart uploads
  younger than it: the processor writes a derivative's object before its row, and the broker starts a
  multipart upload in storage before it records the upload's id.
* Every repair re-checks its finding right before acting, in a fresh transaction that re-reads the rows
  and makes the change conditional on them; storage is asked again too. A finding that no longer holds
  is reported as ``resolved`` and left alone. Repairs are idempotent: a second run finds nothing to do.
* An object is deleted only after a check over every file, blob and derivative row that none of them
  has its key. Keys are built from fresh ids, so once no record needs a key, none can need it later.
* No database transaction is held across a storage call, and both sides are read in pages.

Exit status: 0 when nothing is wrong (or ``--repair`` fixed everything), 1 when findings remain,
2 when the check could not run (usage, configuration, database or storage unreachable).

The rooms: :mod:`.cli` (settings and the command line), :mod:`.report` (findings and their rendering),
:mod:`.scan` (options, the storage Protocol and what every check shares), :mod:`.checks` (one module per
check) and :mod:`.reconciler` (the checks in order). The reconciler reads the catalogue with SQL of its
own but writes it only through :mod:`filestore.metadata.db.store`, and reaches storage only through
:class:`.scan.ReconcilerStorage`, which :class:`filestore.server.storage.ObjectStore` has.
"""

from __future__ import annotations

from filestore.metadata.db.store import needs_refcount_repair
from filestore.metadata.fsck.checks.missing_objects import OBJECT_MISSING_REASON
from filestore.metadata.fsck.checks.stale_multiparts import is_stale_multipart
from filestore.metadata.fsck.cli import FsckSettings, main
from filestore.metadata.fsck.reconciler import FsckError, reconcile, run
from filestore.metadata.fsck.report import Finding, FindingKind, FsckReport, Resolution
from filestore.metadata.fsck.scan import DEFAULT_GRACE, FsckOptions, ReconcilerStorage, is_young

__all__ = [
    "DEFAULT_GRACE",
    "OBJECT_MISSING_REASON",
    "Finding",
    "FindingKind",
    "FsckError",
    "FsckOptions",
    "FsckReport",
    "FsckSettings",
    "ReconcilerStorage",
    "Resolution",
    "is_stale_multipart",
    "is_young",
    "main",
    "needs_refcount_repair",
    "reconcile",
    "run",
]
