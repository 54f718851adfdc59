"""Authentication: every RPC runs as a principal proven by a signed JWT in the gRPC metadata.

Clients send ``authorization: Bearer <token>``. The token's ``sub`` is the principal, ``tenant`` its
tenant, ``roles`` a list of roles. Services call each other with a token of their own carrying the
``service`` role and the tenant ``*``, which lets them act for any tenant named in the request.
Every token's claims are checked against the grammar of :mod:`filestore.core.identity` (a tenant
becomes part of object keys): a token that breaks it is refused as ``TOKEN_CLAIM_INVALID``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

import jwt

from filestore.core.errors import PermissionDenied, Unauthenticated
from filestore.core.identity import ANY_TENANT, SUBJECT_GRAMMAR, TENANT_GRAMMAR, is_subject, is_tenant
from filestore.core.reasons import Reason

__all__ = [
    "SERVICE_ROLE",
    "Principal",
    "ServiceIdentity",
    "TokenVerifier",
    "current_principal",
    "mint_token",
    "require_service",
]

SERVICE_ROLE = "service"
AUTHORIZATION_KEY = "authorization"
_BEARER = "bearer "
#: The algorithms accepted; anything else (``none`` above all) is refused before any key is used.
HS_ALGORITHMS = ("HS256",)
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
#: Verified tokens remembered per verifier (see ``TokenVerifier.verify``).
_VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a subject within a tenant, with roles."""

    subject: str
    tenant: str
    roles: frozenset[str] = frozenset()

    @property
    def is_service(self) -> bool:
        return SERVICE_ROLE in self.roles

    def acting_tenant(self, requested: str) -> str | None:
        """The tenant a request acts in: the caller's own, or for services the one they name.

        ``None`` means "any tenant" (a service that did not name one), which only internal lookups
        by id accept.
        """
        if self.is_service:
            return requested or None
        return self.tenant


_current: ContextVar[Principal | None] = ContextVar("filestore_principal", default=None)


def current_principal() -> Principal:
    """The principal of the RPC being served; the auth interceptor sets it before the servicer runs."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no authenticated principal", reason=Reason.TOKEN_MISSING)
    return principal


def set_current_principal(principal: Principal) -> Token[Principal | None]:
    return _current.set(principal)


def reset_current_principal(token: Token[Principal | None]) -> None:
    _current.reset(token)


def require_service() -> Principal:
    principal = current_principal()
    if not principal.is_service:
        raise PermissionDenied("this method is for Filestore services", reason=Reason.SERVICE_ROLE_REQUIRED)
    return principal


class TokenVerifier:
    """Verifies bearer tokens: HS256 with the shared secret (services, the embedded stack), and
    RS256/ES256 from an identity provider with its public key or key set (JWKS).

    The key is chosen from the token's ``alg`` among those configured, and each key only ever verifies
    its own family of algorithms: a token cannot talk the verifier into using a public key as an HMAC
    secret, and ``alg: none`` is never accepted.
    """

    def __init__(
        self,
        secret: str,
        *,
        public_key_pem: bytes | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 30.0,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 characters")
        self._secret = secret
        self._public_key = public_key_pem
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300) if jwks_url else None
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        # Tokens already verified, until they expire: a caller presents the same token on every
        # call (services re-mint theirs hourly), and a signature check costs more than many RPCs'
        # own work. A token refused is never cached; one cached stays good until its ``exp`` even
        # if its signing key leaves the key set, which short-lived tokens keep brief.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify_header(self, value: str | None) -> Principal:
        if not value:
            raise Unauthenticated("missing bearer token", reason=Reason.TOKEN_MISSING)
        if not value.lower().startswith(_BEARER):
            raise Unauthenticated("authorization must be 'Bearer <token>'", reason=Reason.TOKEN_INVALID)
        return self.verify(value[len(_BEARER) :].strip())

    def _key_for(self, token: str) -> tuple[Any, list[str], bool]:
        """(key, accepted algorithms, whether issuer/audience apply) for this token's algorithm."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthenticated("token invalid", reason=Reason.TOKEN_INVALID) from None
        if algorithm in HS_ALGORITHMS:
            return self._secret, list(HS_ALGORITHMS), False
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if self._jwks is not None:
                try:
                    return self._jwks.get_signing_key_from_jwt(token).key, [algorithm], True
                except jwt.PyJWKClientError:
                    raise Unauthenticated(
                        "token signed by an unknown key", reason=Reason.TOKEN_INVALID
                    ) from None
            if self._public_key is not None:
                return self._public_key, [algorithm], True
        raise Unauthenticated("token algorithm not accepted", reason=Reason.TOKEN_INVALID)

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, good_until = cached
            if time.time() <= good_until:
                return principal
            del self._verified[token]
            raise Unauthenticated("token expired", reason=Reason.TOKEN_EXPIRED)
        principal, expires = self._verify_signed(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (principal, expires + self._leeway_s)
        return principal

    def _verify_signed(self, token: str) -> tuple[Principal, float]:
        """The principal a token proves and its expiry, from the signature and the claims."""
        key, algorithms, external = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                leeway=self._leeway_s,
                options={"require": ["sub", "tenant", "exp"]},
                issuer=self._issuer if external else None,
                audience=self._audience if external else None,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", reason=Reason.TOKEN_EXPIRED) from None
        except jwt.PyJWTError:
            raise Unauthenticated("token invalid", reason=Reason.TOKEN_INVALID) from None
        subject, tenant, roles = claims["sub"], claims["tenant"], claims.get("roles", [])
        if not isinstance(subject, str) or not subject or not isinstance(tenant, str) or not tenant:
            raise Unauthenticated("token lacks subject or tenant", reason=Reason.TOKEN_INVALID)
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise Unauthenticated("token roles malformed", reason=Reason.TOKEN_INVALID)
        if external and SERVICE_ROLE in roles:
            # The service role is ours to give: only tokens signed with the shared secret carry it.
            raise Unauthenticated(
                "an external token cannot carry the service role", reason=Reason.TOKEN_INVALID
            )
        _check_claims(subject=subject, tenant=tenant, service=SERVICE_ROLE in roles)
        return Principal(subject=subject, tenant=tenant, roles=frozenset(roles)), float(claims["exp"])


def _check_claims(*, subject: str, tenant: str, service: bool) -> None:
    """Refuse identity claims outside their grammar. The value is never echoed: it is the caller's
    and may be anything. ``*`` (any tenant) is the service tokens' own tenant, and ``service`` is
    only true here for tokens signed with the shared secret."""
    if not (is_tenant(tenant) or (tenant == ANY_TENANT and service)):
        raise _claim_invalid("tenant", TENANT_GRAMMAR)
    if not is_subject(subject):
        raise _claim_invalid("sub", SUBJECT_GRAMMAR)


def _claim_invalid(claim: str, grammar: str) -> Unauthenticated:
    return Unauthenticated(
        f"the token's {claim} claim is not {grammar}",
        reason=Reason.TOKEN_CLAIM_INVALID,
        metadata={"claim": claim},
    )


def mint_token(
    secret: str,
    *,
    subject: str,
    tenant: str,
    roles: Iterable[str] = (),
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """A signed token for ``subject``: used by services for their own identity, by tests and the CLI."""
    issued = int(now if now is not None else time.time())
    claims = {"sub": subject, "tenant": tenant, "roles": sorted(roles), "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


class ServiceIdentity:
    """The identity a Filestore service uses to call the others: short-lived tokens, re-minted
    before they expire so a long-running service never presents an expired one."""

    def __init__(self, secret: str, *, service: str, ttl_s: int = 3600) -> None:
        self._secret = secret
        self._subject = f"service:{service}"
        self._ttl_s = ttl_s
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = mint_token(
                self._secret,
                subject=self._subject,
                tenant="*",
                roles=[SERVICE_ROLE],
                ttl_s=self._ttl_s,
                now=now,
            )
            self._renew_at = now + self._ttl_s / 2
        return self._token
