"""Pages in a real browser: Chromium (Debian's, driven by Playwright) loads test pages from a small HTTP
server on 127.0.0.1, a secure context (WebCrypto, crypto.randomUUID) and an origin the stack's CORS
allows. The pages import the browser client as `make web` bundles it (clients/web)."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """Copies the test pages into ``root`` and bundles the client beside them, from its sources (so a
    test never runs a stale bundle), exactly as `make web` does but unminified for readable traces."""
    shutil.copytree(PAGES, root, dirs_exist_ok=True)
    esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        raise RuntimeError("node_modules/.bin/esbuild is missing: run `make node-deps`")
    subprocess.run(
        [
            str(esbuild),
            str(ROOT / "clients" / "web" / "src" / "index.ts"),
            "--bundle",
            "--format=esm",
            "--target=es2022",
            "--log-level=warning",
            f"--outfile={root / BUNDLE_NAME}",
        ],
        check=True,
        cwd=ROOT,
    )


@dataclass(frozen=True)
class PageSite:
    """Where the test pages are served from: ``origin`` (allowed by the stack's CORS) and its files."""

    origin: str
    root: Path
