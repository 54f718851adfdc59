"""URLs for public files served through a CDN, unsigned or signed.

Two signing schemes are supported:

* CloudFront (canned or custom policy), signed with RSA-SHA1 as CloudFront requires, through
  botocore's ``CloudFrontSigner``.
* nginx ``secure_link``: ``md5`` = base64url(MD5("{expires}{uri} {secret}")) without padding, and
  ``expires`` = a Unix time, matching ``secure_link $arg_md5,$arg_expires;`` and
  ``secure_link_md5 "$secure_link_expires$uri SECRET";`` in the nginx configuration.
  ``deploy/nginx/filestore-cdn.conf.template`` is that configuration: an edge that checks these links,
  caches, and reads the private bucket through the S3 API with SigV4-signed requests of its own
  (README, "Public files and the CDN", says why that origin and not the filer or anonymous reads).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["CdnUrls", "CloudFrontUrls", "NginxSecureLinkUrls", "UnsignedCdnUrls", "object_path"]


def object_path(key: str) -> str:
    """The URL path of an object key: each segment percent-encoded, slashes kept."""
    return "/" + quote(key, safe="/")


class CdnUrls(Protocol):
    def url(self, key: str, *, expires: datetime) -> str: ...


@dataclass(frozen=True, slots=True)
class UnsignedCdnUrls:
    """A CDN that serves public objects to anyone (its own cache rules decide the lifetime)."""

    base_url: str

    def url(self, key: str, *, expires: datetime) -> str:
        return self.base_url.rstrip("/") + object_path(key)


class CloudFrontUrls:
    def __init__(
        self, base_url: str, *, key_pair_id: str, private_key_file: Path, custom_policy: bool
    ) -> None:
        key = serialization.load_pem_private_key(private_key_file.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("CloudFront signing needs an RSA private key")
        private_key = key

        def rsa_sha1(message: bytes) -> bytes:
            # CloudFront's URL signatures are RSA with SHA-1 (its documented algorithm, not our choice).
            return private_key.sign(message, padding.PKCS1v15(), hashes.SHA1())

        self._base_url = base_url.rstrip("/")
        self._signer = CloudFrontSigner(key_pair_id, rsa_sha1)
        self._custom_policy = custom_policy

    def url(self, key: str, *, expires: datetime) -> str:
        resource = self._base_url + object_path(key)
        if self._custom_policy:
            policy = self._signer.build_policy(resource, expires)
            signed: str = self._signer.generate_presigned_url(resource, policy=policy)
        else:
            signed = self._signer.generate_presigned_url(resource, date_less_than=expires)
        return signed


@dataclass(frozen=True, slots=True)
class NginxSecureLinkUrls:
    base_url: str
    secret: str

    def url(self, key: str, *, expires: datetime) -> str:
        base = self.base_url.rstrip("/")
        expires_at = int(expires.timestamp())
        # nginx hashes $uri: the decoded path as the edge sees it, the base URL's own path included.
        decoded = unquote(urlsplit(base).path) + "/" + key
        digest = hashlib.md5(f"{expires_at}{decoded} {self.secret}".encode(), usedforsecurity=False).digest()
        token = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return f"{base}{object_path(key)}?md5={token}&expires={expires_at}"
