from __future__ import annotations

import time

import jwt
import pytest

from filestore.core.auth import ServiceIdentity, TokenVerifier, mint_token
from filestore.core.errors import Unauthenticated

SECRET = "s" * 40


def test_valid_token_gives_the_principal() -> None:
    principal = TokenVerifier(SECRET).verify_header(
        "Bearer " + mint_token(SECRET, subject="ann", tenant="acme")
    )
    assert (principal.subject, principal.tenant, principal.is_service) == ("ann", "acme", False)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "TOKEN_MISSING"),
        ("", "TOKEN_MISSING"),
        ("Basic dXNlcjpwYXNz", "TOKEN_INVALID"),
        ("Bearer " + mint_token("o" * 40, subject="ann", tenant="acme"), "TOKEN_INVALID"),
        (
            "Bearer " + mint_token(SECRET, subject="ann", tenant="acme", now=time.time() - 7200),
            "TOKEN_EXPIRED",
        ),
        (
            "Bearer " + jwt.encode({"sub": "ann", "tenant": "acme", "exp": 2**40}, key="", algorithm="none"),
            "TOKEN_INVALID",
        ),
        ("Bearer " + jwt.encode({"sub": "ann", "exp": 2**40}, SECRET, algorithm="HS256"), "TOKEN_INVALID"),
    ],
    ids=["absent", "empty", "not-bearer", "forged", "expired", "alg-none", "no-tenant"],
)
def test_bad_tokens_are_refused(header: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(SECRET).verify_header(header)
    assert caught.value.reason == reason


def test_service_identity_is_a_service_principal() -> None:
    principal = TokenVerifier(SECRET).verify(ServiceIdentity(SECRET, service="upload").token())
    assert principal.is_service
    assert principal.acting_tenant("acme") == "acme"


def test_a_token_verified_once_is_refused_after_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified tokens are remembered, but only until their own expiry (plus the leeway)."""
    verifier = TokenVerifier(SECRET, leeway_s=5)
    token = mint_token(SECRET, subject="ann", tenant="acme", ttl_s=60)
    assert verifier.verify(token).subject == "ann"
    assert verifier.verify(token).subject == "ann"  # from the cache
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 66)
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    assert caught.value.reason == "TOKEN_EXPIRED"


def test_what_is_remembered_is_the_whole_signed_token() -> None:
    """A token with the same claims and another signature is checked, and refused, even after the
    genuine one was verified and remembered."""
    verifier = TokenVerifier(SECRET)
    issued = time.time()
    genuine = mint_token(SECRET, subject="ann", tenant="acme", now=issued)
    assert verifier.verify(genuine).subject == "ann"
    header, claims, _ = genuine.split(".")
    forged = mint_token("o" * 40, subject="ann", tenant="acme", now=issued)
    assert forged.split(".")[:2] == [header, claims]  # the same header and claims
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(forged)
    assert caught.value.reason == "TOKEN_INVALID"
