"""The pipeline's one door to the metadata service: typed calls in, typed answers out, and a failed
call re-raised once, here, as the typed error it carried (:mod:`filestore.core.errors`).

A file on the required path costs three calls from claim to READY: :meth:`Catalogue.start` (the claim,
with the file, the object holding its bytes and the steps settled before), and
:meth:`Catalogue.record` twice (integrity with its verified digest, then the other required steps with
the READY, QUARANTINED or FAILED they imply). Every call is idempotent, so a redelivered event may make
any of them again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import Message

from filestore.core.channels import translated_errors
from filestore.processor.pipeline_config import StepName
from filestore.processor.steps.base import SETTLED, StepOutcome
from filestore.v1 import metadata_service_pb2, resources_pb2

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

__all__ = ["Catalogue", "Recorded", "Started"]

Req = TypeVar("Req", bound=Message)
Ans = TypeVar("Ans", bound=Message)
Status = resources_pb2.FileStatus


@dataclass(frozen=True, slots=True)
class Started:
    file: resources_pb2.File
    #: The object holding the file's bytes (a deduplicated file's is the copy it shares).
    content_key: str
    #: Steps whose outcome a redelivery does not repeat.
    settled: frozenset[str]
    #: Whether this call moved the file to PROCESSING (the claim was won).
    claimed: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    file: resources_pb2.File
    content_key: str
    derivatives: tuple[resources_pb2.Derivative, ...]


class Catalogue:
    def __init__(self, metadata: MetadataServiceAsyncStub) -> None:
        self._metadata = metadata

    async def start(self, tenant: str, file_id: str, *, claim: bool) -> Started:
        """The file, its content key and settled steps; with ``claim``, an UPLOADED file is claimed."""
        answer = await _call(
            self._metadata.StartProcessing,
            metadata_service_pb2.StartProcessingRequest(file_id=file_id, tenant=tenant, claim=claim),
        )
        return Started(
            file=answer.file,
            content_key=answer.content_key,
            settled=frozenset(result.step for result in answer.results if result.outcome in SETTLED),
            claimed=answer.claimed,
        )

    async def record(
        self,
        file: resources_pb2.File,
        outcomes: Sequence[tuple[StepName, StepOutcome]],
        *,
        conclusion: tuple[Status.ValueType, str] | None = None,
    ) -> Recorded:
        """Record the steps' outcomes with their facts and derivatives, and the file's move to the
        ``conclusion`` (status, reason) they imply, in one call."""
        request = metadata_service_pb2.RecordProcessingOutcomeRequest(file_id=file.id, tenant=file.tenant)
        for step, outcome in outcomes:
            request.results.append(
                resources_pb2.ProcessingResult(step=step, outcome=outcome.outcome, details=outcome.details)
            )
            if outcome.verified is not None:
                request.verified_content.sha256 = outcome.verified.sha256
                request.verified_content.size = outcome.verified.size
            request.sniffed_content_type = outcome.sniffed_content_type or request.sniffed_content_type
            request.extracted_text = outcome.extracted_text or request.extracted_text
            request.derivatives.extend(outcome.derivatives)
        if conclusion is not None:
            request.status, request.status_reason = conclusion
        answer = await _call(self._metadata.RecordProcessingOutcome, request)
        return Recorded(
            file=answer.file, content_key=answer.content_key, derivatives=tuple(answer.derivatives)
        )

    async def quarantine_content(
        self, tenant: str, storage_key: str, reason: str
    ) -> list[resources_pb2.File]:
        """Quarantine every file reading ``storage_key``; answers the files moved by this call."""
        answer = await _call(
            self._metadata.QuarantineContent,
            metadata_service_pb2.QuarantineContentRequest(
                tenant=tenant, storage_key=storage_key, reason=reason
            ),
        )
        return list(answer.files)


async def _call(method: Callable[[Req], Awaitable[Ans]], request: Req) -> Ans:
    """The one place a metadata call's failure becomes a typed error."""
    with translated_errors():
        return await method(request)
