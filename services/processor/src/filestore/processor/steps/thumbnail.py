"""The thumbnail step: WebP thumbnails of images, a PDF's first page and a video's frame, written to
storage and registered as derivatives ``thumbnail_<size>`` (overwritten in place when run again)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

from PIL import Image

from filestore.core.keys import derivative_key
from filestore.processor import media
from filestore.processor.pipeline_config import PipelineSettings, StepName
from filestore.processor.steps.base import (
    RENDER_REFUSALS,
    Outcome,
    Run,
    StepOutcome,
    configured_for,
    render_refused,
)
from filestore.v1 import resources_pb2

__all__ = ["THUMBNAIL_CONTENT_TYPE", "ThumbnailStep"]

THUMBNAIL_CONTENT_TYPE: Final = "image/webp"
#: How long the URL ffmpeg reads a video through stays valid.
TOOL_URL_TTL_S: Final = 900


class ThumbnailStep:
    name = StepName.THUMBNAIL

    def __init__(self, config: PipelineSettings) -> None:
        self._config = config

    def applies(self, content_type: str) -> bool:
        return configured_for(self._config, self.name, content_type)

    async def run(self, run: Run) -> StepOutcome:
        try:
            if run.sniffed.startswith("video/"):
                url = run.store.internal_get_url(run.key, expires_s=TOOL_URL_TTL_S)
                frame = await run.beating(media.video_frame(url, timeout_s=self._config.tool_timeout_s))
                made = await run.blocking(self._thumbnails_of_bytes, frame)
            else:
                path = await run.spooled_original(max_bytes=self._config.max_render_bytes)
                made = await run.blocking(self._thumbnails_of_file, path, run.sniffed)
        except RENDER_REFUSALS as error:
            return render_refused(error)
        derivatives = []
        for size, data in sorted(made.items()):
            kind = f"thumbnail_{size}"
            # Written before the catalogue registers it: a crash in between leaves an object the next
            # delivery overwrites, never a record pointing at nothing.
            key = derivative_key(run.tenant, run.file_id, kind)
            await run.beating(run.store.put(key, data, content_type=THUMBNAIL_CONTENT_TYPE))
            derivatives.append(
                resources_pb2.Derivative(kind=kind, size=len(data), content_type=THUMBNAIL_CONTENT_TYPE)
            )
        return StepOutcome(
            outcome=Outcome.STEP_OUTCOME_PASSED,
            details={"derivatives": ",".join(d.kind for d in derivatives)},
            derivatives=tuple(derivatives),
        )

    def _thumbnails_of_file(self, path: Path, sniffed: str) -> dict[int, bytes]:
        sizes = self._config.thumbnail_sizes
        max_pixels = self._config.max_image_pixels
        if sniffed == "application/pdf":
            with media.pdf_first_page(path, max_pixels=max_pixels, dpi=96) as page:
                return media.thumbnails_webp(page, sizes)
        with media.open_image(path, max_pixels=max_pixels) as image:
            return media.thumbnails_webp(image, sizes)

    def _thumbnails_of_bytes(self, data: bytes) -> dict[int, bytes]:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > self._config.max_image_pixels:
                raise media.ImageTooLarge(width, height, self._config.max_image_pixels)
            return media.thumbnails_webp(image, self._config.thumbnail_sizes)
