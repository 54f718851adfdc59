"""The OCR step: a PDF's text layer, or tesseract on an image (or a PDF page without one). The text,
truncated to the catalogue's limit at a character boundary, is what ListFiles' ``text_contains``
searches."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from filestore.processor import media
from filestore.processor.pipeline_config import PipelineSettings, StepName
from filestore.processor.steps.base import (
    RENDER_REFUSALS,
    Outcome,
    Run,
    StepOutcome,
    configured_for,
    render_refused,
    truncate_utf8,
)

__all__ = ["OcrStep"]

OCR_DPI: Final = 300


class OcrStep:
    name = StepName.OCR

    def __init__(self, config: PipelineSettings) -> None:
        self._config = config

    def applies(self, content_type: str) -> bool:
        return configured_for(self._config, self.name, content_type)

    async def run(self, run: Run) -> StepOutcome:
        try:
            path = await run.spooled_original(max_bytes=self._config.max_render_bytes)
            source = "ocr"
            if run.sniffed == "application/pdf":
                text = await run.blocking(media.pdf_text, path)
                if text:
                    source = "text_layer"
                else:
                    image_path = await run.blocking(self._pdf_page_png, path)
                    text = await run.beating(self._tesseract(image_path))
            else:
                image_path = await run.blocking(self._ocr_input, path)
                text = await run.beating(self._tesseract(image_path))
        except RENDER_REFUSALS as error:
            return render_refused(error)
        stored = truncate_utf8(text)
        return StepOutcome(
            outcome=Outcome.STEP_OUTCOME_PASSED,
            details={
                "source": source,
                "chars": str(len(stored)),
                "truncated": "true" if stored != text else "false",
            },
            extracted_text=stored,
        )

    async def _tesseract(self, image_path: Path) -> str:
        return await media.ocr(
            image_path, languages=self._config.ocr_languages, timeout_s=self._config.tool_timeout_s
        )

    def _ocr_input(self, path: Path) -> Path:
        """An image tesseract reads, after the pixel guard: the original when Leptonica reads its format
        reliably, else a PNG of its first frame."""
        with media.open_image(path, max_pixels=self._config.max_image_pixels) as image:
            if image.format in ("PNG", "JPEG", "TIFF"):
                return path
            target = path.with_name("ocr.png")
            image.convert("RGB").save(target, format="PNG")
            return target

    def _pdf_page_png(self, path: Path) -> Path:
        target = path.with_name("page1.png")
        with media.pdf_first_page(path, max_pixels=self._config.max_image_pixels, dpi=OCR_DPI) as page:
            page.save(target, format="PNG")
        return target
