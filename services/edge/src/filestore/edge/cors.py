"""The HTTP rules in front of the Connect application: which pages may call, with which method.

* **Origins**: an explicit allowlist (``FILESTORE_CORS_ORIGINS``, default none). A request with an
  ``Origin`` header not on it is refused (403, Connect error ``permission_denied``,
  ``ORIGIN_NOT_ALLOWED``) and gets no CORS header; so is its preflight (403, no CORS header). A
  request without ``Origin`` (a server, curl, a same-origin GET) is not a page's and passes.
  Browsers do not send cookies here (no ``Access-Control-Allow-Credentials``); the bearer token
  travels in ``Authorization``, which the preflight allows.
* **Methods**: POST only. Connect's GET form puts the request in the query string, and a URL ends up
  in logs and histories: no request, and so no token or session token, ever travels in a URL.
* **gRPC** (``application/grpc``, HTTP/2 with trailers) belongs on the services' own ports, not
  here: 415. gRPC-Web and Connect are served.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from google.rpc import error_details_pb2

from filestore.core.reasons import Reason
from filestore.edge.wire import DOMAIN

__all__ = ["ALLOWED_REQUEST_HEADERS", "EXPOSED_RESPONSE_HEADERS", "HEALTH_PATH", "BrowserRules"]

#: What a Connect or gRPC-Web client sends, plus the bearer token and our request id.
ALLOWED_REQUEST_HEADERS: Final = (
    "Content-Type",
    "Connect-Protocol-Version",
    "Connect-Timeout-Ms",
    "Authorization",
    "X-Grpc-Web",
    "X-User-Agent",
    "Grpc-Timeout",
    "X-Request-Id",
)
#: gRPC-Web answers its status in these headers when an error comes before any message; a page
#: can read only headers it is told it may.
EXPOSED_RESPONSE_HEADERS: Final = ("Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin")
#: How long a browser may reuse a preflight's answer (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_S: Final = 7200
#: A plain liveness answer for the stack and load balancers (no CORS: no page needs it).
HEALTH_PATH: Final = "/healthz"

_ALLOWED_LOWER: Final = frozenset(name.lower() for name in ALLOWED_REQUEST_HEADERS)

# The ASGI types, loosely: asgiref's TypedDicts are not installed, and nothing here needs them.
Scope = dict[str, Any]
ASGISendEvent = dict[str, Any]
ASGIReceiveCallable = Callable[[], Awaitable[dict[str, Any]]]
ASGISendCallable = Callable[[ASGISendEvent], Awaitable[None]]
App = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(
    send: ASGISendCallable, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _connect_error(code: str, message: str, reason: Reason, **metadata: str) -> bytes:
    """A Connect error body; the ErrorInfo is given in its JSON form (``debug``) as well as packed,
    so that curl shows the reason."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    value = base64.b64encode(info.SerializeToString()).decode().rstrip("=")
    detail = {
        "type": "google.rpc.ErrorInfo",
        "value": value,
        "debug": {"reason": str(reason), "domain": DOMAIN, "metadata": metadata},
    }
    return json.dumps({"code": code, "message": message, "details": [detail]}).encode()


class BrowserRules:
    """ASGI middleware: origin allowlist and preflights, POST only, then the Connect application."""

    def __init__(self, app: App, *, origins: Iterable[str]) -> None:
        self._app = app
        self._origins = frozenset(origins)
        self._cors_headers = [
            (b"access-control-expose-headers", ", ".join(EXPOSED_RESPONSE_HEADERS).encode()),
            (b"vary", b"Origin"),
        ]

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        if scope["path"] == HEALTH_PATH and method in ("GET", "HEAD"):
            await _answer(send, 200, b"ok\n", [(b"content-type", b"text/plain")])
            return
        origin = _header(scope, b"origin")
        if method == "OPTIONS":
            await self._preflight(scope, send, origin)
            return
        if origin is not None and origin not in self._origins:
            body = _connect_error(
                "permission_denied",
                f"origin {origin} may not call Filestore (FILESTORE_CORS_ORIGINS)",
                Reason.ORIGIN_NOT_ALLOWED,
                origin=origin,
            )
            await _answer(send, 403, body, [(b"content-type", b"application/json"), (b"vary", b"Origin")])
            return
        if method != "POST":
            await _answer(send, 405, b"POST only\n", [(b"allow", b"POST, OPTIONS")])
            return
        content_type = (_header(scope, b"content-type") or "").lower()
        if content_type == "application/grpc" or content_type.startswith("application/grpc+"):
            await _answer(
                send, 415, b"gRPC is served on the services' own ports; use Connect or gRPC-Web here\n"
            )
            return
        if origin is None:
            await self._app(scope, receive, send)
            return
        await self._app(scope, receive, self._with_cors(send, origin))

    def _with_cors(self, send: ASGISendCallable, origin: str) -> ASGISendCallable:
        allow = [(b"access-control-allow-origin", origin.encode()), *self._cors_headers]

        async def send_with_cors(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], *allow]}
            await send(message)

        return send_with_cors

    async def _preflight(self, scope: Scope, send: ASGISendCallable, origin: str | None) -> None:
        requested_method = _header(scope, b"access-control-request-method")
        if origin is None or requested_method is None:
            await _answer(send, 405, b"OPTIONS is for CORS preflights\n", [(b"allow", b"POST, OPTIONS")])
            return
        requested_headers = {
            name.strip().lower()
            for name in (_header(scope, b"access-control-request-headers") or "").split(",")
            if name.strip()
        }
        if (
            origin not in self._origins
            or requested_method != "POST"
            or not requested_headers <= _ALLOWED_LOWER
        ):
            # No CORS header at all: the browser does not send the request.
            await _answer(send, 403, b"", [(b"vary", b"Origin")])
            return
        await _answer(
            send,
            204,
            b"",
            [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-allow-methods", b"POST"),
                (b"access-control-allow-headers", ", ".join(ALLOWED_REQUEST_HEADERS).encode()),
                (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()),
                *self._cors_headers,
            ],
        )
