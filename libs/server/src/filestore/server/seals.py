"""Sealed tokens: bytes a service hands to a client and takes back, proven its own by HMAC-SHA256.

Page tokens (:mod:`filestore.server.pagetokens`) and upload session tokens
(:mod:`filestore.upload.session`) both carry a body the client must not alter. A seal is the one
mechanism for both: a key derived from a secret under a label of its own (so the same secret never
signs two kinds of token alike, nor anything else it signs), a MAC before the body, and unpadded
URL-safe base64 around both. Opening accepts only the exact spelling that sealing produces, so no
altered token, not even one differing only in base64's spare bits, passes for the original.
"""

from __future__ import annotations

import base64
import binascii
import hmac

__all__ = ["Seal"]

_TOKEN_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Seal:
    """Seals and opens tokens under the key ``secret`` gives for ``label``."""

    def __init__(self, secret: str, *, label: str, mac_bytes: int = 32, max_chars: int = 4096) -> None:
        self._key = hmac.digest(secret.encode(), label.encode(), "sha256")
        self._mac_bytes = mac_bytes
        self._max_chars = max_chars

    def seal(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(self._mac(body) + body).decode().rstrip("=")

    def open(self, token: str) -> bytes | None:
        """The body of a token this seal made; ``None`` for anything else."""
        if not token or len(token) > self._max_chars:
            return None
        encoded = token.encode("ascii", errors="replace")
        if not _TOKEN_ALPHABET.issuperset(encoded):
            return None
        try:
            raw = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            return None
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != encoded:
            return None
        mac, body = raw[: self._mac_bytes], raw[self._mac_bytes :]
        if len(mac) != self._mac_bytes or not hmac.compare_digest(mac, self._mac(body)):
            return None
        return body

    def _mac(self, body: bytes) -> bytes:
        return hmac.digest(self._key, body, "sha256")[: self._mac_bytes]
