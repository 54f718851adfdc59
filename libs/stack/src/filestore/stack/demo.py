"""The demo page of the local stack, and the development identity it uses.

``filestore-stack run`` starts this server as its ``demo`` component (``python -m filestore.stack.demo``);
nothing else does. It serves the page (``demo_page/``, package data), the browser client bundle ``make
web`` builds (read at every request, so a rebuild needs no restart), and ``GET /dev-identity``: a
token of the development user (``dev`` of tenant ``dev``, the CLI's default identity) minted with the
stack's token secret, valid for an hour, with the face's URL.

That endpoint hands a token to whoever asks, so it must never be reachable from elsewhere, and it is
not, by construction:

* It lives in the embedded stack's package only; no service and not the browser face
  (``filestore-edge``, which serves POSTed RPCs and ``/healthz`` and nothing else) serves a page or
  mints a user's token. A deployment runs the services and the face, never this module.
* It answers only peers on a loopback address, and only requests whose ``Host`` is its own address
  (a page of another site cannot reach it through DNS rebinding).
* It never answers CORS headers, and refuses ``/dev-identity`` to a request that says it comes from
  another origin (``Origin``, ``Sec-Fetch-Site``): another page in the same browser cannot read it.

Environment: ``FILESTORE_LISTEN`` (host:port), ``FILESTORE_AUTH_SECRET``, ``FILESTORE_EDGE_URL``,
``FILESTORE_DEMO_WEB_BUNDLE`` (the bundle's path; empty: the page says it is not built).
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from filestore.core.auth import mint_token

__all__ = ["DEV_SUBJECT", "DEV_TENANT", "IDENTITY_PATH", "DemoSettings", "serve"]

#: The development identity: the same user and tenant the CLI's development tokens name by default,
#: so `filestore ls` lists what was uploaded from the page.
DEV_SUBJECT: Final = "dev"
DEV_TENANT: Final = "dev"
IDENTITY_PATH: Final = "/dev-identity"
#: An hour: the page asks for a new one before it expires.
TOKEN_TTL_S: Final = 3600
BUNDLE_NAME: Final = "filestore-web.js"

_PAGE_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
    "/demo.css": ("demo.css", "text/css; charset=utf-8"),
}
_SAME_SITE_FETCHES: Final = frozenset({"same-origin", "none"})


@dataclass(frozen=True, slots=True)
class DemoSettings:
    host: str
    port: int
    auth_secret: str
    edge_url: str
    web_bundle: Path | None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls) -> DemoSettings:
        host, _, port = os.environ["FILESTORE_LISTEN"].rpartition(":")
        bundle = os.environ.get("FILESTORE_DEMO_WEB_BUNDLE", "").strip()
        return cls(
            host=host,
            port=int(port),
            auth_secret=os.environ["FILESTORE_AUTH_SECRET"],
            edge_url=os.environ["FILESTORE_EDGE_URL"],
            web_bundle=Path(bundle) if bundle else None,
        )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class _DemoHandler(http.server.BaseHTTPRequestHandler):
    settings: DemoSettings
    server_version = "filestore-demo"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # no access log: nothing to audit here
        pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not _is_loopback(self.client_address[0]):
            self._answer(403, b"the demo page answers this machine only\n", "text/plain")
            return
        own_host = f"{self.settings.host}:{self.settings.port}"
        host = self.headers.get("Host", "")
        path = urlsplit(self.path).path
        if host != own_host:
            if urlsplit(f"//{host}").hostname == "localhost":
                # The same machine under another name, hence another origin, which the face and the
                # bucket do not allow: go to the one they do.
                self.send_response(307)
                self.send_header("Location", f"{self.settings.origin}{path}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._answer(421, f"this server is {own_host}\n".encode(), "text/plain")
            return
        if path == "/healthz":
            self._answer(200, b"ok\n", "text/plain")
        elif path == IDENTITY_PATH:
            self._identity()
        elif path in _PAGE_FILES:
            name, content_type = _PAGE_FILES[path]
            page = resources.files("filestore.stack") / "demo_page" / name
            self._answer(200, page.read_bytes(), content_type)
        elif path in (f"/{BUNDLE_NAME}", f"/{BUNDLE_NAME}.map"):
            self._bundle(path.removeprefix("/"))
        else:
            self._answer(404, b"not found\n", "text/plain")

    def _identity(self) -> None:
        origin = self.headers.get("Origin")
        fetch_site = self.headers.get("Sec-Fetch-Site")
        if (origin is not None and origin != self.settings.origin) or (
            fetch_site is not None and fetch_site not in _SAME_SITE_FETCHES
        ):
            self._answer(403, b"the development identity is for the demo page itself\n", "text/plain")
            return
        now = int(time.time())
        identity = {
            "subject": DEV_SUBJECT,
            "tenant": DEV_TENANT,
            "token": mint_token(
                self.settings.auth_secret, subject=DEV_SUBJECT, tenant=DEV_TENANT, ttl_s=TOKEN_TTL_S, now=now
            ),
            "expiresAt": now + TOKEN_TTL_S,
            "edgeUrl": self.settings.edge_url,
        }
        self._answer(200, json.dumps(identity).encode(), "application/json")

    def _bundle(self, name: str) -> None:
        bundle = self.settings.web_bundle
        try:
            if bundle is None:
                raise FileNotFoundError(BUNDLE_NAME)
            body = (bundle if name == BUNDLE_NAME else bundle.with_name(name)).read_bytes()
        except OSError:
            self._answer(404, b"the browser client is not built: run `make web`\n", "text/plain")
            return
        content_type = "text/javascript" if name == BUNDLE_NAME else "application/json"
        self._answer(200, body, f"{content_type}; charset=utf-8")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # The page and the bundle change with the repository; the identity must never be reused.
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def serve(settings: DemoSettings) -> http.server.ThreadingHTTPServer:
    """A server bound to ``settings``' address; run ``serve_forever()`` on it."""
    handler = type("DemoHandler", (_DemoHandler,), {"settings": settings})
    return http.server.ThreadingHTTPServer((settings.host, settings.port), handler)


def main() -> None:
    settings = DemoSettings.from_env()
    server = serve(settings)
    # SIGTERM (the stack stopping) ends serve_forever from another thread, as shutdown() requires.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"filestore-demo: serving {settings.origin}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
