from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

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


# Claims outside the grammar of filestore.core.identity: a tenant becomes part of object keys.
BAD_TENANTS = [
    "x/y",
    "..",
    ".",
    "../acme",
    "a\x00b",
    "t" * 64,
    " acme",
    "acme\n",
    "ac me",
    "-acme",
    "café",
    "*",  # the service tokens' tenant, for a token without the service role
]
BAD_SUBJECTS = ["s" * 256, "ann\x00", "ann\n", "ev\u202eil", "a\u2028b", "zero\u200bwidth", "\ud800"]


@pytest.mark.parametrize("tenant", BAD_TENANTS)
def test_a_tenant_claim_outside_the_grammar_is_refused(tenant: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(SECRET).verify(mint_token(SECRET, subject="ann", tenant=tenant))
    assert (caught.value.reason, caught.value.metadata) == ("TOKEN_CLAIM_INVALID", {"claim": "tenant"})


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
def test_a_subject_claim_outside_the_grammar_is_refused(subject: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(SECRET).verify(mint_token(SECRET, subject=subject, tenant="acme"))
    assert (caught.value.reason, caught.value.metadata) == ("TOKEN_CLAIM_INVALID", {"claim": "sub"})


@pytest.mark.parametrize(
    ("subject", "tenant"),
    [
        ("ann", "a"),
        ("ann", "t" * 63),
        ("ann@example.com", "A.b_c-9"),
        ("auth0|5f7c", "a..b"),
        ("s" * 255, "acme"),
    ],
)
def test_claims_inside_the_grammar_are_accepted(subject: str, tenant: str) -> None:
    principal = TokenVerifier(SECRET).verify(mint_token(SECRET, subject=subject, tenant=tenant))
    assert (principal.subject, principal.tenant) == (subject, tenant)


def test_only_a_service_token_may_name_every_tenant() -> None:
    verifier = TokenVerifier(SECRET)
    assert verifier.verify(mint_token(SECRET, subject="service:x", tenant="*", roles=["service"])).is_service
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(mint_token(SECRET, subject="ann", tenant="*", roles=["reader"]))
    assert caught.value.reason == "TOKEN_CLAIM_INVALID"


def test_a_refused_claim_is_not_remembered() -> None:
    """The verifier remembers only tokens it accepted, keyed by the whole token."""
    verifier = TokenVerifier(SECRET)
    token = mint_token(SECRET, subject="ann", tenant="x/y")
    for _ in range(2):
        with pytest.raises(Unauthenticated) as caught:
            verifier.verify(token)
        assert caught.value.reason == "TOKEN_CLAIM_INVALID"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_identity_provider_tokens_have_the_same_grammar(algorithm: str) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifier = TokenVerifier(SECRET, public_key_pem=public)

    def token(**claims: str) -> str:
        return jwt.encode(
            {"sub": "bob", "tenant": "acme", "exp": int(time.time()) + 600, **claims}, key, algorithm
        )

    assert verifier.verify(token()).tenant == "acme"
    for claims, claim in (
        ({"tenant": "acme/other"}, "tenant"),
        ({"tenant": "*"}, "tenant"),
        ({"sub": "b\x00b"}, "sub"),
    ):
        with pytest.raises(Unauthenticated) as caught:
            verifier.verify(token(**claims))
        assert (caught.value.reason, caught.value.metadata) == ("TOKEN_CLAIM_INVALID", {"claim": claim})
