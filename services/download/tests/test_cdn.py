"""CDN URL signing, checked the way the CDN checks it."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from filestore.download.cdn import CloudFrontUrls, NginxSecureLinkUrls, UnsignedCdnUrls
from filestore.download.servicer import content_disposition

KEY = "originals/acme/0b7c1e9e-4a6f-4b38-9b0e-2d1f3c4a5b6c"
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def _cloudfront_b64decode(value: str) -> bytes:
    # CloudFront's URL-safe base64: '+' -> '-', '=' -> '_', '/' -> '~'.
    return base64.b64decode(value.replace("-", "+").replace("_", "=").replace("~", "/"))


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "cloudfront.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key, path


@pytest.mark.parametrize("custom", [False, True], ids=["canned", "custom"])
def test_cloudfront_urls_verify_with_the_public_key(
    rsa_key: tuple[rsa.RSAPrivateKey, Path], custom: bool
) -> None:
    key, path = rsa_key
    url = CloudFrontUrls(
        "https://cdn.example.com/", key_pair_id="K2JCJMDEHXQW5F", private_key_file=path, custom_policy=custom
    ).url(KEY, expires=EXPIRES)
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert parts.path == "/" + KEY
    assert query["Key-Pair-Id"] == "K2JCJMDEHXQW5F"
    resource = f"https://cdn.example.com/{KEY}"
    if custom:
        policy = _cloudfront_b64decode(query["Policy"])
    else:
        assert query["Expires"] == str(int(EXPIRES.timestamp()))
        policy = json.dumps(
            {
                "Statement": [
                    {
                        "Resource": resource,
                        "Condition": {"DateLessThan": {"AWS:EpochTime": int(EXPIRES.timestamp())}},
                    }
                ]
            },
            separators=(",", ":"),
        ).encode()
    statement = json.loads(policy)["Statement"][0]
    assert statement["Resource"] == resource
    key.public_key().verify(
        _cloudfront_b64decode(query["Signature"]), policy, padding.PKCS1v15(), hashes.SHA1()
    )
    with pytest.raises(InvalidSignature):
        key.public_key().verify(
            _cloudfront_b64decode(query["Signature"]), policy + b" ", padding.PKCS1v15(), hashes.SHA1()
        )


def test_nginx_secure_link_matches_the_nginx_formula() -> None:
    url = NginxSecureLinkUrls("http://127.0.0.1:8080", "a-secret-of-enough-length").url(KEY, expires=EXPIRES)
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    expected = (
        base64.urlsafe_b64encode(
            hashlib.md5(f"{int(EXPIRES.timestamp())}/{KEY} a-secret-of-enough-length".encode()).digest()
        )
        .decode()
        .rstrip("=")
    )
    assert (parts.path, query["md5"], query["expires"]) == (
        "/" + KEY,
        expected,
        str(int(EXPIRES.timestamp())),
    )


def test_unsigned_cdn_url() -> None:
    assert (
        UnsignedCdnUrls("https://cdn.example.com/").url(KEY, expires=EXPIRES)
        == f"https://cdn.example.com/{KEY}"
    )


@pytest.mark.parametrize(
    ("name", "inline", "expected"),
    [
        ("report.pdf", False, "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        (
            "résumé 2026.pdf",
            True,
            "inline; filename=\"r_sum_ 2026.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202026.pdf",
        ),
        ('a"b;c\\d.txt', False, "attachment; filename=\"a_b_c_d.txt\"; filename*=UTF-8''a%22b%3Bc%5Cd.txt"),
        ("\u202etxt.exe", False, "attachment; filename=\"_txt.exe\"; filename*=UTF-8''%E2%80%AEtxt.exe"),
    ],
)
def test_content_disposition_follows_rfc_6266(name: str, inline: bool, expected: str) -> None:
    assert content_disposition(name, inline=inline) == expected


def test_nginx_secure_link_signs_the_base_urls_path_too() -> None:
    # nginx checks $uri, the whole decoded path: a CDN mounted under a prefix must be signed with it.
    url = NginxSecureLinkUrls("https://cdn.example.com/files%20v1/", "a-secret-of-enough-length").url(
        KEY, expires=EXPIRES
    )
    parts = urlsplit(url)
    token = parse_qs(parts.query)["md5"][0]
    expected = (
        base64.urlsafe_b64encode(
            hashlib.md5(
                f"{int(EXPIRES.timestamp())}/files v1/{KEY} a-secret-of-enough-length".encode()
            ).digest()
        )
        .decode()
        .rstrip("=")
    )
    assert (parts.path, token) == (f"/files%20v1/{KEY}", expected)
