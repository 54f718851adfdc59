"""The integrity step: stream the stored object, SHA-256 and size, and hold them against what the file
declared. The catalogue records the digest (a match makes the content a dedup target, and may point
the file at a copy its tenant already held) and holds it against the declaration again itself: the
step's verdict only spares the other steps content that is about to be quarantined."""

from __future__ import annotations

from filestore.processor.pipeline_config import StepName
from filestore.processor.steps.base import Outcome, Run, Status, StepOutcome

__all__ = ["IntegrityStep"]


class IntegrityStep:
    name = StepName.INTEGRITY

    def applies(self, content_type: str) -> bool:
        # Nothing is looked at, let alone served, before its bytes are verified.
        return True

    async def run(self, run: Run) -> StepOutcome:
        digest = await run.digest()
        details = {"sha256": digest.sha256, "size": str(digest.size)}
        declared = run.file
        if (not declared.sha256 or declared.sha256 == digest.sha256) and digest.size == declared.size:
            return StepOutcome(outcome=Outcome.STEP_OUTCOME_PASSED, details=details, verified=digest)
        # The reason the catalogue gives the file when it records this digest.
        reason = "CHECKSUM_MISMATCH" if declared.sha256 != digest.sha256 else "SIZE_MISMATCH"
        return StepOutcome(
            outcome=Outcome.STEP_OUTCOME_FAILED,
            details=details,
            verified=digest,
            stop=(Status.FILE_STATUS_QUARANTINED, reason),
        )
