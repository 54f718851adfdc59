"""What the pipeline learns from and makes of content: sniffed types and the type policy, thumbnails
(Pillow, PDFium, ffmpeg) and OCR (tesseract). Blocking functions run in worker threads; the external
tools run as subprocesses with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import magic
import pypdfium2 as pdfium  # type: ignore[import-untyped]  # ships no type information
from PIL import Image, ImageOps, UnidentifiedImageError

from filestore.core.validation import is_content_type

__all__ = [
    "ImageTooLarge",
    "ToolFailed",
    "ToolMissing",
    "TypeJudgement",
    "judge_types",
    "ocr",
    "open_image",
    "pdf_first_page",
    "pdf_text",
    "sniff",
    "thumbnails_webp",
    "video_frame",
]

#: How much lower than the worker the external tools (tesseract, ffmpeg) run, in nice levels.
TOOL_NICENESS: Final = 10

#: Types whose bytes a client's machine may run. One of these under any other declared type is the
#: classic disguise (``invoice.png`` that is a PE file): the file is quarantined, never served.
EXECUTABLE_TYPES: Final = frozenset(
    {
        "application/x-executable",
        "application/x-pie-executable",
        "application/x-sharedlib",
        "application/x-elf",
        "application/x-dosexec",
        "application/x-msdownload",
        "application/vnd.microsoft.portable-executable",
        "application/x-mach-binary",
        "application/x-msi",
        "application/x-shellscript",
        "text/x-shellscript",
        "text/x-msdos-batch",
        "application/x-bat",
    }
)
#: What libmagic answers when it recognises nothing in particular: no disagreement to speak of.
GENERIC_TYPES: Final = frozenset(
    {"application/octet-stream", "text/plain", "inode/x-empty", "application/x-empty"}
)
RASTER_FORMATS: Final = frozenset({"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"})

# Pillow's own guard has a fixed limit and raises from Image.open before the size can be reported;
# open_image enforces the configured limit itself, from the header, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None


class ImageTooLarge(Exception):
    """More pixels than the decompression-bomb guard allows; nothing was decoded."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        super().__init__(f"{width}x{height} is more than {limit} pixels")
        self.width = width
        self.height = height
        self.limit = limit


class ToolMissing(Exception):
    """An optional external tool (ffmpeg) is not installed."""


class ToolFailed(Exception):
    """An external tool failed or timed out on this content."""


def sniff(head: bytes) -> str:
    """The content type libmagic sees in the first bytes."""
    if not head:
        return "application/x-empty"
    detected: str = magic.from_buffer(head, mime=True)
    detected = detected.lower()
    if detected == "application/x-dosexec" and not head.startswith((b"MZ", b"ZM")):
        # A DOS .COM program has no header: libmagic guesses one from the first instruction byte,
        # which about 1 in 100 random (or encrypted, or compressed) files matches. Only the MZ
        # signature of a real DOS/Windows executable is evidence enough to quarantine a file.
        return "application/octet-stream"
    # Whatever libmagic says must be storable as a content type, or the file would be stuck.
    return detected if is_content_type(detected) else "application/octet-stream"


@dataclass(frozen=True, slots=True)
class TypeJudgement:
    agrees: bool
    #: The declared type hides an executable: quarantine.
    disguised_executable: bool


def judge_types(declared: str, sniffed: str) -> TypeJudgement:
    declared = declared.split(";", maxsplit=1)[0].strip().lower()
    agrees = declared == sniffed or sniffed in GENERIC_TYPES
    disguised = sniffed in EXECUTABLE_TYPES and declared not in EXECUTABLE_TYPES
    return TypeJudgement(agrees=agrees, disguised_executable=disguised)


def open_image(path: Path, *, max_pixels: int) -> Image.Image:
    """Open an image lazily and enforce the pixel guard before any pixel is decoded: Pillow reads only
    the header here, so a 50,000 x 50,000 PNG of a few KB costs nothing."""
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ToolFailed(f"not a readable image: {error}") from error
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(width, height, max_pixels)
    if image.format not in RASTER_FORMATS:
        image.close()
        raise ToolFailed(f"unsupported image format {image.format}")
    return image


def thumbnails_webp(image: Image.Image, sizes: tuple[int, ...]) -> dict[int, bytes]:
    """WebPs no larger than size x size for each size, upright (EXIF orientation applied), from the
    first frame of an animation."""
    if image.format == "JPEG":
        # Lets libjpeg decode at 1/2..1/8 scale: far less memory and time for big photos.
        image.draft("RGB", (max(sizes) * 2, max(sizes) * 2))
    try:
        frame = ImageOps.exif_transpose(image)
        if frame.mode not in ("RGB", "RGBA"):
            keeps_alpha = "A" in frame.getbands() or "transparency" in frame.info
            frame = frame.convert("RGBA" if keeps_alpha else "RGB")
        made: dict[int, bytes] = {}
        for size in sorted(sizes, reverse=True):
            # Each size from the previous (larger) one: one full decode, cheaper resizes.
            frame.thumbnail((size, size), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            frame.save(out, format="WEBP", quality=80, method=4)
            made[size] = out.getvalue()
    except (OSError, ValueError, SyntaxError) as error:
        # Truncated or corrupt data surfaces only when pixels are decoded.
        raise ToolFailed(f"cannot decode the image: {error}") from error
    return made


def pdf_first_page(path: Path, *, max_pixels: int, dpi: int = 200) -> Image.Image:
    """The first page rendered at ``dpi`` (less when that would exceed the pixel guard)."""
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as error:
        raise ToolFailed(f"not a readable PDF: {error}") from error
    try:
        if len(document) == 0:
            raise ToolFailed("the PDF has no pages")
        page = document[0]
        width_pt, height_pt = page.get_size()
        scale = dpi / 72
        pixels = width_pt * height_pt * scale * scale
        if pixels > max_pixels:
            scale *= (max_pixels / pixels) ** 0.5
        if scale <= 0 or width_pt * height_pt <= 0:
            raise ToolFailed("the first page has no area")
        rendered: Image.Image = page.render(scale=scale).to_pil()
        return rendered
    finally:
        document.close()


def pdf_text(path: Path, *, max_pages: int = 200, max_chars: int = 1024 * 1024) -> str:
    """The text layer of the first ``max_pages`` pages; empty when the PDF is scanned images only."""
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as error:
        raise ToolFailed(f"not a readable PDF: {error}") from error
    parts: list[str] = []
    total = 0
    try:
        for index in range(min(len(document), max_pages)):
            textpage = document[index].get_textpage()
            try:
                text = textpage.get_text_bounded()
            finally:
                textpage.close()
            parts.append(text)
            total += len(text)
            if total >= max_chars:
                break
    finally:
        document.close()
    return "\n".join(parts).strip()


async def _run_tool(argv: list[str], *, timeout_s: float, stdin: bytes | None = None) -> bytes:
    # Thumbnails and OCR are not on the way to READY: at a lower priority, the integrity, sniff and
    # scan steps of the next files do not queue behind them for the CPU.
    nice = shutil.which("nice")
    priority = [nice, "-n", str(TOOL_NICENESS)] if nice else []
    process = await asyncio.create_subprocess_exec(
        *priority,
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # tesseract otherwise starts a thread per core for every page, and several run at once.
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise ToolFailed(f"{Path(argv[0]).name} timed out after {timeout_s:g}s") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ToolFailed(f"{Path(argv[0]).name} exited {process.returncode}: {detail[0][:300]}")
    return stdout


async def ocr(image_path: Path, *, languages: str, timeout_s: float) -> str:
    """tesseract's text for one image file."""
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        raise ToolMissing("tesseract is not installed")
    out = await _run_tool([tesseract, str(image_path), "stdout", "-l", languages], timeout_s=timeout_s)
    return out.decode("utf-8", errors="replace").strip()


async def video_frame(url: str, *, timeout_s: float) -> bytes:
    """One frame (PNG) a second into the video, or the first frame of a shorter one. ffmpeg reads the
    presigned URL itself, seeking with Range requests, so the video is never downloaded whole."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ToolMissing("ffmpeg is not installed")
    for offset in ("1", "0"):
        frame = await _run_tool(
            [ffmpeg, "-nostdin", "-v", "error", "-ss", offset, "-i", url, "-frames:v", "1",
             "-f", "image2pipe", "-vcodec", "png", "-"],
            timeout_s=timeout_s,
        )  # fmt: skip
        if frame:
            return frame
    raise ToolFailed("ffmpeg found no video frame")
