"""Which pipeline steps run for which content type, which must pass before READY, and their limits.

Read once at start from the environment (see ``PipelineSettings.from_env``); a malformed value stops the
process with one line naming the variable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from filestore.core.env import PREFIX, Env, SettingsError

__all__ = ["CLAMAV_MAX_BYTES", "DEFAULT_STEPS", "NO_SCANNER", "PipelineSettings", "StepName"]


class StepName(StrEnum):
    """A pipeline step; the value is the step name stored with its ProcessingResult."""

    INTEGRITY = "integrity"
    SNIFF = "sniff"
    SCAN = "scan"
    THUMBNAIL = "thumbnail"
    OCR = "ocr"


#: The order steps run in, whatever order the configuration lists them in: the gate steps decide
#: whether the content may be looked at at all before anything renders it.
STEP_ORDER: Final = (StepName.INTEGRITY, StepName.SNIFF, StepName.SCAN, StepName.THUMBNAIL, StepName.OCR)

#: Content-type pattern -> steps. The first matching pattern wins; ``*/*`` matches everything.
#: Steps are chosen by the *sniffed* type (the declared one only names what the client claims).
DEFAULT_STEPS: Final[tuple[tuple[str, tuple[StepName, ...]], ...]] = (
    ("image/*", STEP_ORDER),
    # OCR on a PDF runs only when it has no text layer (its text layer is extracted instead).
    ("application/pdf", STEP_ORDER),
    ("video/*", (StepName.INTEGRITY, StepName.SNIFF, StepName.SCAN, StepName.THUMBNAIL)),
    ("*/*", (StepName.INTEGRITY, StepName.SNIFF, StepName.SCAN)),
)
#: Must pass (or be skipped by policy) before READY; the others run after READY and never change it.
DEFAULT_REQUIRED: Final = frozenset({StepName.INTEGRITY, StepName.SNIFF, StepName.SCAN})
#: The largest object libclamav scans: clamd clamps MaxFileSize to this ("File size limit set to
#: 2147483645 bytes" in its log, whatever clamd.conf asks), and anything larger only raises
#: Heuristics.Limits.Exceeded.MaxFileSize.
CLAMAV_MAX_BYTES: Final = 2**31 - 3
#: ``FILESTORE_CLAMD_ADDR`` value of a deployment that has no virus scanner (the embedded stack on a
#: machine without clamd): the scan step then ends SKIPPED ``TOOL_MISSING`` and files become READY
#: unscanned. Only this explicit value does that; an address nobody answers on is an outage, retried.
NO_SCANNER: Final = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSettings:
    #: (pattern, steps), first match wins.
    steps: tuple[tuple[str, tuple[StepName, ...]], ...] = DEFAULT_STEPS
    #: Steps that gate READY.
    required: frozenset[StepName] = DEFAULT_REQUIRED
    #: clamd's TCP address; None when the deployment has no scanner (``FILESTORE_CLAMD_ADDR=none``).
    clamd_address: str | None = "127.0.0.1:3310"
    #: How long one scan may take before it counts as a transient failure.
    scan_timeout_s: float = 900.0
    #: Bytes sent to clamd per INSTREAM frame (must stay below clamd's StreamMaxLength).
    scan_chunk_bytes: int = 64 * 1024
    #: Objects larger than this are not scanned; the file fails with TOO_LARGE_TO_SCAN (fail closed).
    #: libclamav scans at most CLAMAV_MAX_BYTES whatever clamd.conf says, so that is the default and
    #: the ceiling.
    scan_max_bytes: int = CLAMAV_MAX_BYTES
    #: Bytes read (a Range request) to sniff the type.
    sniff_bytes: int = 8192
    #: Thumbnail edge lengths; each makes a derivative `thumbnail_<size>` (WebP).
    thumbnail_sizes: tuple[int, ...] = (256,)
    #: Images and PDFs larger than this are not rendered (the step is SKIPPED): bounds what a worker reads.
    max_render_bytes: int = 64 * 1024 * 1024
    #: Decompression-bomb guard: images with more pixels are refused before any pixel is decoded.
    max_image_pixels: int = 40_000_000
    #: tesseract languages, e.g. ``eng`` or ``eng+deu``.
    ocr_languages: str = "eng"
    #: How long tesseract or ffmpeg may run on one file.
    tool_timeout_s: float = 120.0

    def steps_for(self, content_type: str) -> tuple[StepName, ...]:
        content_type = content_type.split(";", maxsplit=1)[0].strip().lower()
        for pattern, steps in self.steps:
            if _matches(pattern, content_type):
                return tuple(step for step in STEP_ORDER if step in steps)
        return ()

    @classmethod
    def from_env(cls, env: Env) -> PipelineSettings:
        return cls(
            steps=_parse_steps(env.optional_str(f"{PREFIX}PIPELINE")),
            required=frozenset(
                _step(name, f"{PREFIX}PIPELINE_REQUIRED")
                for name in env.csv(f"{PREFIX}PIPELINE_REQUIRED", tuple(DEFAULT_REQUIRED))
            ),
            clamd_address=(
                None
                if env.optional_str(f"{PREFIX}CLAMD_ADDR") == NO_SCANNER
                else env.address(f"{PREFIX}CLAMD_ADDR", "127.0.0.1:3310")
            ),
            scan_timeout_s=env.number(f"{PREFIX}SCAN_TIMEOUT_S", 900.0, minimum=1.0),
            scan_max_bytes=env.integer(
                f"{PREFIX}SCAN_MAX_BYTES", CLAMAV_MAX_BYTES, minimum=1, maximum=CLAMAV_MAX_BYTES
            ),
            thumbnail_sizes=tuple(_size(raw) for raw in env.csv(f"{PREFIX}THUMBNAIL_SIZES", ("256",))),
            max_render_bytes=env.integer(
                f"{PREFIX}MAX_RENDER_BYTES", 64 * 1024 * 1024, minimum=1024, maximum=1024 * 1024 * 1024
            ),
            max_image_pixels=env.integer(
                f"{PREFIX}MAX_IMAGE_PIXELS", 40_000_000, minimum=1, maximum=500_000_000
            ),
            ocr_languages=env.string(f"{PREFIX}OCR_LANGUAGES", "eng"),
            tool_timeout_s=env.number(f"{PREFIX}TOOL_TIMEOUT_S", 120.0, minimum=1.0),
        )


def _matches(pattern: str, content_type: str) -> bool:
    if pattern == "*/*":
        return True
    if pattern.endswith("/*"):
        return content_type.startswith(pattern[:-1])
    return content_type == pattern


def _step(name: str, variable: str) -> StepName:
    try:
        return StepName(name.strip())
    except ValueError:
        known = ", ".join(step.value for step in StepName)
        raise SettingsError(f"{variable}: unknown step {name!r} (known: {known})") from None


def _size(raw: str) -> int:
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 16 <= size <= 4096:
        raise SettingsError(f"{PREFIX}THUMBNAIL_SIZES: {raw!r} is not an edge length 16..4096")
    return size


def _parse_steps(raw: str | None) -> tuple[tuple[str, tuple[StepName, ...]], ...]:
    """``{"image/*": ["integrity", "sniff", "scan", "thumbnail"], "*/*": [...]}``, in order."""
    variable = f"{PREFIX}PIPELINE"
    if raw is None:
        return DEFAULT_STEPS
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise SettingsError(f"{variable} is not JSON ({error})") from None
    if not isinstance(data, dict) or not data:
        raise SettingsError(f'{variable} must be a JSON object like {{"image/*": ["integrity", ...]}}')
    parsed: list[tuple[str, tuple[StepName, ...]]] = []
    for pattern, names in data.items():
        if "/" not in pattern or not isinstance(names, list):
            raise SettingsError(
                f"{variable}: {pattern!r} must be a type/subtype pattern with a list of steps"
            )
        steps = tuple(_step(str(name), variable) for name in names)
        # Nothing is looked at, let alone served, before its bytes are verified.
        if StepName.INTEGRITY not in steps:
            raise SettingsError(f"{variable}: the steps for {pattern!r} must include integrity")
        parsed.append((pattern.lower(), steps))
    if not any(pattern == "*/*" for pattern, _ in parsed):
        parsed.append(("*/*", (StepName.INTEGRITY, StepName.SNIFF, StepName.SCAN)))
    return tuple(parsed)
