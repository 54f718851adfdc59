"""The pipeline's steps, one module each behind one interface (:class:`.base.Step`): :mod:`.integrity`,
:mod:`.sniff` and :mod:`.scan` gate READY by default; :mod:`.thumbnail` and :mod:`.ocr` enrich a READY
file. A step reads the object its :class:`.base.Run` names and answers a :class:`.base.StepOutcome` with
the facts and derivatives it established; the pipeline records them through the catalogue."""

from __future__ import annotations

from filestore.processor.pipeline_config import PipelineSettings, StepName
from filestore.processor.scanner import Scanner
from filestore.processor.steps.base import (
    Digest,
    Heartbeat,
    PipelineStorage,
    Run,
    Step,
    StepOutcome,
    truncate_utf8,
)
from filestore.processor.steps.integrity import IntegrityStep
from filestore.processor.steps.ocr import OcrStep
from filestore.processor.steps.scan import ScanStep
from filestore.processor.steps.sniff import SniffStep
from filestore.processor.steps.thumbnail import ThumbnailStep

__all__ = [
    "Digest",
    "Heartbeat",
    "PipelineStorage",
    "Run",
    "Step",
    "StepOutcome",
    "all_steps",
    "truncate_utf8",
]


def all_steps(config: PipelineSettings, *, scanner: Scanner | None) -> dict[StepName, Step]:
    """Every step, by name."""
    steps: tuple[Step, ...] = (
        IntegrityStep(),
        SniffStep(config),
        ScanStep(config, scanner),
        ThumbnailStep(config),
        OcrStep(config),
    )
    return {step.name: step for step in steps}
