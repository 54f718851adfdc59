"""Opaque, tamper-proof page tokens (AIP-158).

A token carries a position and a fingerprint of the request it belongs to, signed with HMAC-SHA256:
an altered token, or a token reused with different filters, is refused with INVALID_PAGE_TOKEN.
Tokens are opaque to clients, not secret: they name a row they could read anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from google.protobuf.message import Message

from filestore.core.errors import InvalidArgument
from filestore.core.reasons import Reason
from filestore.server.seals import Seal

__all__ = ["PageTokens", "request_fingerprint"]

_MAC_BYTES = 16


def request_fingerprint(request: Message, *, ignore: tuple[str, ...] = ("page_token", "page_size")) -> str:
    """What makes two list requests "the same listing": every field but paging."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ignore:
        copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:32]


class PageTokens:
    def __init__(self, secret: str, *, purpose: str) -> None:
        self._seal = Seal(secret, label=f"filestore page tokens: {purpose}", mac_bytes=_MAC_BYTES)

    def encode(self, position: Mapping[str, str], *, fingerprint: str) -> str:
        payload = {"p": dict(position), "f": fingerprint}
        return self._seal.seal(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())

    def decode(self, token: str, *, fingerprint: str) -> dict[str, str]:
        body = self._seal.open(token)
        if body is None:
            raise _invalid()
        payload = json.loads(body)
        if payload.get("f") != fingerprint:
            raise InvalidArgument(
                "the page token belongs to a request with other filters", reason=Reason.INVALID_PAGE_TOKEN
            )
        position = payload.get("p")
        if not isinstance(position, dict) or not all(isinstance(v, str) for v in position.values()):
            raise _invalid()
        return position


def _invalid() -> InvalidArgument:
    return InvalidArgument("the page token is not one this service issued", reason=Reason.INVALID_PAGE_TOKEN)
