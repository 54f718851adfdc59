"""Seals: what was sealed opens intact under the same secret and label, and nothing else opens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from filestore.core.errors import InvalidArgument
from filestore.server.pagetokens import PageTokens
from filestore.server.seals import Seal

SECRET = "s" * 40


def test_a_sealed_body_opens_intact() -> None:
    seal = Seal(SECRET, label="tests")
    for body in (b"", b"x", bytes(range(256)), b"\x00" * 1000):
        token = seal.seal(body)
        assert "=" not in token
        assert seal.open(token) == body
        assert Seal(SECRET, label="tests").open(token) == body


def test_another_secret_label_or_mac_length_opens_nothing() -> None:
    token = Seal(SECRET, label="tests").seal(b"body")
    assert Seal("t" * 40, label="tests").open(token) is None
    assert Seal(SECRET, label="other").open(token) is None
    assert Seal(SECRET, label="tests", mac_bytes=16).open(token) is None


def test_any_altered_character_is_refused() -> None:
    seal = Seal(SECRET, label="tests")
    token = seal.seal(b"position 42")
    for index, char in enumerate(token):
        for other in {"A", "B", "g", "-", "_"} - {char}:
            assert seal.open(token[:index] + other + token[index + 1 :]) is None
    plus = token[:-1] + "+"  # standard base64's alphabet, not the URL-safe one
    for malformed in ("", token + "A", token[:-1], token + "=", f" {token}", plus, "é" * 50):
        assert seal.open(malformed) is None
    assert Seal(SECRET, label="tests", max_chars=len(token) - 1).open(token) is None


def test_page_tokens_issued_before_seals_still_open() -> None:
    # A token as PageTokens wrote it before it was built on Seal: sixteen MAC bytes, then the body.
    key = hmac.new(SECRET.encode(), b"filestore page tokens: ListFiles", hashlib.sha256).digest()
    body = json.dumps({"f": "fp", "p": {"id": "f_1"}}, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
    earlier = base64.urlsafe_b64encode(mac + body).decode().rstrip("=")
    tokens = PageTokens(SECRET, purpose="ListFiles")
    assert tokens.encode({"id": "f_1"}, fingerprint="fp") == earlier
    assert tokens.decode(earlier, fingerprint="fp") == {"id": "f_1"}
    with pytest.raises(InvalidArgument) as refused:
        tokens.decode(earlier, fingerprint="other")
    assert refused.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        PageTokens(SECRET, purpose="ListDeadLetters").decode(earlier, fingerprint="fp")
