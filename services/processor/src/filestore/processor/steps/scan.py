"""The scan step: the object streamed to clamd (INSTREAM). It fails closed: content the scanner cannot
take in full is never served unscanned."""

from __future__ import annotations

from typing import Final

import structlog

from filestore.processor.pipeline_config import PipelineSettings, StepName
from filestore.processor.scanner import Scanner
from filestore.processor.steps.base import Outcome, Run, Status, StepOutcome, configured_for, passed, skipped

__all__ = ["SCAN_LIMIT_SIGNATURE", "ScanStep"]

log = structlog.get_logger("filestore.processor")

#: What clamd (with AlertExceedsMax) answers when a limit stopped the scan.
SCAN_LIMIT_SIGNATURE: Final = "Heuristics.Limits.Exceeded"


class ScanStep:
    name = StepName.SCAN

    def __init__(self, config: PipelineSettings, scanner: Scanner | None) -> None:
        self._config = config
        self._scanner = scanner

    def applies(self, content_type: str) -> bool:
        return configured_for(self._config, self.name, content_type)

    async def run(self, run: Run) -> StepOutcome:
        if self._scanner is None:
            # The deployment says it has no scanner (FILESTORE_CLAMD_ADDR=none), as ffmpeg or
            # tesseract may be missing: the file's record says it was not scanned, and
            # ReprocessFile scans it once a scanner is configured.
            return skipped("TOOL_MISSING", detail="no virus scanner is configured: the file was not scanned")
        limit = self._config.scan_max_bytes
        if run.file.size > limit:
            return self._too_large(str(limit))
        chunks = run.store.stream(run.key, chunk_bytes=run.chunk_bytes)
        verdict = await run.blocking(self._scanner.scan, chunks)
        if verdict.signature.startswith(SCAN_LIMIT_SIGNATURE):
            # clamd stopped at one of its limits: the content was not fully scanned, which is no
            # verdict on it. Fail closed, as for objects over scan_max_bytes.
            return self._too_large(verdict.signature)
        if not verdict.clean:
            log.warning("malware_found", signature=verdict.signature)
            return StepOutcome(
                outcome=Outcome.STEP_OUTCOME_FAILED,
                details={"signature": verdict.signature, "scanner": "clamav"},
                stop=(Status.FILE_STATUS_QUARANTINED, "MALWARE_FOUND"),
            )
        return passed(scanner="clamav")

    @staticmethod
    def _too_large(limit: str) -> StepOutcome:
        return StepOutcome(
            outcome=Outcome.STEP_OUTCOME_SKIPPED,
            details={"reason": "TOO_LARGE_TO_SCAN", "limit": limit},
            stop=(Status.FILE_STATUS_FAILED, "TOO_LARGE_TO_SCAN"),
        )
