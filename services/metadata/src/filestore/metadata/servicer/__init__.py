"""MetadataService: the gRPC face of the catalogue. The data rules (lifecycle, quotas, tenancy,
idempotency races) live in :mod:`filestore.metadata.db.store`; this package checks requests, decides
who may do what, and runs each RPC in one transaction.

One module per resource: :mod:`.files`, :mod:`.uploads`, :mod:`.access` (AuthorizeRead and grants),
:mod:`.processing` (what the pipeline records: verified content, facts, step results, derivatives,
quarantined content), :mod:`.quotas`, :mod:`.placement` (residency, replicas) and :mod:`.lifecycle`
(tiers, expiry, legal holds, restores). What they share is in :mod:`.base` (the access checks) and
:mod:`.unit_of_work` (the transactions, and the request_id replays of the write RPCs).

Each module is a mixin over :class:`.base.ServicerBase`, and :class:`MetadataServicer` combines them.
Mixins rather than delegation because gRPC dispatches to one servicer object by method name: delegating
would need a forwarding method per RPC, a second list of the 26 RPCs to keep in step with the modules.
Each mixin subclasses the generated servicer (through the base), so mypy checks every RPC's signature
against the proto's, and an RPC no mixin implements leaves :class:`MetadataServicer` abstract.
"""

from __future__ import annotations

from filestore.metadata.servicer.access import AccessRpcs
from filestore.metadata.servicer.files import FileRpcs
from filestore.metadata.servicer.lifecycle import LifecycleRpcs
from filestore.metadata.servicer.placement import PlacementRpcs
from filestore.metadata.servicer.processing import ProcessingRpcs
from filestore.metadata.servicer.quotas import QuotaRpcs
from filestore.metadata.servicer.uploads import UploadRpcs

__all__ = ["MetadataServicer"]


class MetadataServicer(
    FileRpcs, UploadRpcs, AccessRpcs, ProcessingRpcs, QuotaRpcs, PlacementRpcs, LifecycleRpcs
):
    """Every RPC of MetadataService; constructed as ``MetadataServicer(sessions, objects=...,
    page_token_secret=...)`` (see :class:`.base.ServicerBase`)."""
