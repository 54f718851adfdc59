"""The sniff step: libmagic on the object's first bytes (one Range read). The sniffed type chooses the
remaining steps; an executable under another declared type is the classic disguise, and quarantined."""

from __future__ import annotations

from filestore.processor import media
from filestore.processor.pipeline_config import PipelineSettings, StepName
from filestore.processor.steps.base import Outcome, Run, Status, StepOutcome

__all__ = ["SniffStep"]


class SniffStep:
    name = StepName.SNIFF

    def __init__(self, config: PipelineSettings) -> None:
        self._sniff_bytes = config.sniff_bytes

    def applies(self, content_type: str) -> bool:
        # It runs before the type is known: the type is what it finds out.
        return True

    async def run(self, run: Run) -> StepOutcome:
        head = await run.beating(run.store.read_range(run.key, start=0, length=self._sniff_bytes))
        sniffed = media.sniff(head)
        # The steps after it in this run choose by it (see StepName and PipelineSettings.steps_for).
        run.sniffed = sniffed
        declared = run.file.declared_content_type
        judged = media.judge_types(declared, sniffed)
        details = {"declared": declared, "sniffed": sniffed, "agrees": "true" if judged.agrees else "false"}
        if judged.disguised_executable:
            return StepOutcome(
                outcome=Outcome.STEP_OUTCOME_FAILED,
                details=details,
                sniffed_content_type=sniffed,
                stop=(Status.FILE_STATUS_QUARANTINED, "CONTENT_TYPE_MISMATCH"),
            )
        return StepOutcome(outcome=Outcome.STEP_OUTCOME_PASSED, details=details, sniffed_content_type=sniffed)
