"""Pages in a real browser: Chromium (Debian's, driven by Playwright) loads test pages from a small HTTP
server on 127.0.0.1, a secure context (WebCrypto, crypto.randomUUID) and an origin the stack's CORS
allows. The pages import the browser client as `make web` bundles it (clients/web)."""

from __future__ import annotations

import base64
import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2
from playwright.async_api import Page, Request

from filestore.v1 import upload_service_pb2
from tests.support import Client

ROOT = Path(__file__).resolve().parent.parent
#: The test pages (HTML and the harness that drives the client).
PAGES = Path(__file__).resolve().parent / "web"
#: Debian's chromium: no browser build can be downloaded here, so Playwright drives this one.
CHROMIUM = Path("/usr/bin/chromium")
BUNDLE_NAME = "filestore-web.js"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the tests' output is not an access log
        pass

    def end_headers(self) -> None:
        # A reload must fetch the harness and the bundle again, not reuse what the last test cached.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@contextmanager
def page_server(root: Path) -> Iterator[str]:
    """Serves ``root`` on a free loopback port in a thread; yields its origin (``http://127.0.0.1:N``)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def install_pages(root: Path) -> None:
    """Copies the test pages into ``root`` and bundles, from their sources (so a test never runs a stale
    bundle), the client beside them exactly as `make web` does but unminified for readable traces, and
    the Uppy page (Uppy's own packages with the adapter of clients/uppy) into ``uppy/``."""
    shutil.copytree(PAGES, root, dirs_exist_ok=True)
    _bundle(ROOT / "clients" / "web" / "src" / "index.ts", root / BUNDLE_NAME)
    _bundle(PAGES / "uppy" / "page.js", root / "uppy" / "uppy.js")


def _bundle(entry: Path, outfile: Path) -> None:
    esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        raise RuntimeError("node_modules/.bin/esbuild is missing: run `make node-deps`")
    subprocess.run(
        [
            str(esbuild),
            str(entry),
            "--bundle",
            "--format=esm",
            "--target=es2022",
            "--log-level=warning",
            f"--outfile={outfile}",
        ],
        check=True,
        cwd=ROOT,
    )


@dataclass(frozen=True)
class PageSite:
    """Where the test pages are served from: ``origin`` (allowed by the stack's CORS) and its files."""

    origin: str
    root: Path


REQUESTS: dict[str, type[Message]] = {
    "CreateUpload": upload_service_pb2.CreateUploadRequest,
    "GetUpload": upload_service_pb2.GetUploadRequest,
    "SignParts": upload_service_pb2.SignPartsRequest,
    "CompleteUpload": upload_service_pb2.CompleteUploadRequest,
    "AbortUpload": upload_service_pb2.AbortUploadRequest,
}


async def bridge_to_broker(page: Page, client: Client) -> list[tuple[str, dict[str, Any]]]:
    """``window.filestoreCall(method, requestJson)``: the UploadService call made with ``client``'s
    token over gRPC, answered as protobuf JSON (or the error's code, message and details). Answers
    the list of the calls made, as (method, request JSON)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    async def call(method: str, request: dict[str, Any]) -> dict[str, Any]:
        calls.append((method, request))
        rpc: Callable[[Message], Awaitable[Message]] = getattr(client.upload, method)
        try:
            response = await rpc(json_format.ParseDict(request, REQUESTS[method]()))
        except grpc.aio.AioRpcError as error:
            return {
                "error": {
                    "code": error.code().value[0],
                    "message": error.details() or "",
                    "details": _details(error),
                }
            }
        return {"response": json_format.MessageToDict(response)}

    await page.expose_function("filestoreCall", call)
    return calls


def _details(error: grpc.aio.AioRpcError) -> list[dict[str, str]]:
    """The google.rpc.Status details of a failed call, as Connect carries them (type name, base64 bytes)."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
    status = status_pb2.Status.FromString(raw if isinstance(raw, bytes) else raw.encode())
    return [{"type": d.TypeName(), "value": base64.b64encode(d.value).decode()} for d in status.details]


def part_puts(page: Page) -> list[int]:
    """The part numbers of the PUTs the page sends from now on (preflights are OPTIONS, not counted)."""
    numbers: list[int] = []

    def seen(request: Request) -> None:
        if request.method == "PUT":
            query = httpx.URL(request.url).params
            numbers.append(int(query.get("partNumber", "0")))

    page.on("request", seen)
    return numbers
