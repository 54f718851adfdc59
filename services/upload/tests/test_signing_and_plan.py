"""Pure parts of the broker: the SigV4 presigner agrees with botocore, the multipart plan follows
S3's rules, and the settings refuse unsafe CORS and malformed tenant limits."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.config import Config

from filestore.core.env import SettingsError
from filestore.core.errors import InvalidArgument
from filestore.server.settings import parse_cors_origins
from filestore.server.sigv4 import PartChecksum, PartToSign, SigV4Presigner
from filestore.upload.plan import MAX_PARTS, MIB, MIN_PART_SIZE, plan_parts
from filestore.upload.settings import parse_tenant_limits

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ENDPOINT = "http://127.0.0.1:8333"
KEY = "originals/acme/0b9f1c1e-5f5e-4c1e-9c4b-2d1f0e9d8c7b"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _botocore_url(operation: str, params: dict[str, object], *, expires: int = 900) -> str:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=Config(region_name="us-east-1", signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        url: str = client.generate_presigned_url(
            operation, Params={"Bucket": "filestore", **params}, ExpiresIn=expires
        )
    return url


def _split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", dict(parse_qsl(parts.query))


@pytest.fixture
def presigner() -> SigV4Presigner:
    return SigV4Presigner(
        endpoint=ENDPOINT,
        region="us-east-1",
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        bucket="filestore",
    )


def test_put_url_matches_botocore(presigner: SigV4Presigner) -> None:
    ours = presigner.presign_put(
        KEY, content_type="application/pdf", size=1234, sha256_hex=SHA, expires_s=900, now=NOW
    )
    theirs = _botocore_url(
        "put_object",
        {
            "Key": KEY,
            "ContentType": "application/pdf",
            "ContentLength": 1234,
            "ChecksumSHA256": base64.b64encode(bytes.fromhex(SHA)).decode(),
            "IfNoneMatch": "*",
        },
    )
    assert _split(ours.url) == _split(theirs)
    assert ours.headers == {
        "Content-Type": "application/pdf",
        "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(SHA)).decode(),
        "If-None-Match": "*",
    }


def test_get_url_matches_botocore(presigner: SigV4Presigner) -> None:
    disposition = "attachment; filename=\"r\u00e9sum\u00e9.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    ours = presigner.presign_get(
        KEY,
        expires_s=600,
        response_content_type="application/pdf",
        response_content_disposition=disposition,
        now=NOW,
    )
    theirs = _botocore_url(
        "get_object",
        {"Key": KEY, "ResponseContentType": "application/pdf", "ResponseContentDisposition": disposition},
        expires=600,
    )
    assert _split(ours.url) == _split(theirs)
    assert ours.headers == {}


def test_part_url_matches_botocore(presigner: SigV4Presigner) -> None:
    ours = presigner.presign_part(
        KEY, upload_id="abc_DEF-1/2", part_number=42, size=5 * MIB, expires_s=900, now=NOW
    )
    theirs = _botocore_url(
        "upload_part", {"Key": KEY, "UploadId": "abc_DEF-1/2", "PartNumber": 42, "ContentLength": 5 * MIB}
    )
    assert _split(ours.url) == _split(theirs)


def test_part_url_with_checksum_matches_botocore(presigner: SigV4Presigner) -> None:
    crc32 = PartChecksum("crc32", "0a1b2c3d")
    ours = presigner.presign_part(
        KEY, upload_id="u-1", part_number=7, size=5 * MIB, checksum=crc32, expires_s=900, now=NOW
    )
    theirs = _botocore_url(
        "upload_part",
        {
            "Key": KEY,
            "UploadId": "u-1",
            "PartNumber": 7,
            "ContentLength": 5 * MIB,
            "ChecksumCRC32": crc32.base64(),
        },
    )
    assert _split(ours.url) == _split(theirs)
    assert ours.headers == {"x-amz-checksum-crc32": crc32.base64()}


def test_a_batch_of_part_urls_is_each_part_signed_alone(presigner: SigV4Presigner) -> None:
    # Mixed on purpose: with and without a checksum, and both algorithms, in one batch.
    parts = [
        PartToSign(1, 5 * MIB),
        PartToSign(2, 5 * MIB, PartChecksum("crc32", "0a1b2c3d")),
        PartToSign(3, 5 * MIB, PartChecksum("sha256", SHA)),
        PartToSign(10_000, 17),
    ]
    batch = presigner.presign_parts(KEY, upload_id="abc_DEF-1/2", parts=parts, expires_s=900, now=NOW)
    general = [
        presigner.presign(
            "PUT",
            KEY,
            expires_s=900,
            query={"partNumber": str(part.number), "uploadId": "abc_DEF-1/2"},
            headers={
                "Content-Length": str(part.size),
                **dict([part.checksum.header()] if part.checksum else []),
            },
            now=NOW,
        )
        for part in parts
    ]
    assert batch == general
    assert len({signed.url for signed in batch}) == len(parts)


def test_post_policy_pins_key_type_and_exact_length(presigner: SigV4Presigner) -> None:
    policy = presigner.post_policy(KEY, content_type="image/png", size=3000, expires_s=600, now=NOW)
    assert policy.url == f"{ENDPOINT}/filestore"
    document = json.loads(base64.b64decode(policy.fields["policy"]))
    assert document["expiration"] == "2026-01-02T03:14:05.000Z"
    assert ["content-length-range", 3000, 3000] in document["conditions"]
    assert ["eq", "$Content-Type", "image/png"] in document["conditions"]
    assert ["eq", "$key", KEY] in document["conditions"]


@pytest.mark.parametrize(
    ("size", "requested", "expected"),
    [
        (1, 0, (16 * MIB, 1)),
        (100 * MIB, 0, (16 * MIB, 7)),
        (100 * MIB, MIN_PART_SIZE, (MIN_PART_SIZE, 20)),
        # 1 TiB in 5 MiB parts would be 209,716 parts: raised to the smallest whole MiB that fits.
        (1024**4, MIN_PART_SIZE, (105 * MIB, 9987)),
        (5 * 1024**4, 0, (525 * MIB, 9987)),
    ],
)
def test_plan_follows_s3_rules(size: int, requested: int, expected: tuple[int, int]) -> None:
    plan = plan_parts(size, requested_part_size=requested)
    assert (plan.part_size, plan.part_count) == expected
    assert plan.part_count <= MAX_PARTS
    assert sum(plan.part_length(n) for n in range(1, plan.part_count + 1)) == size
    assert all(plan.part_length(n) == plan.part_size for n in range(1, plan.part_count))
    with pytest.raises(InvalidArgument):
        plan.part_length(plan.part_count + 1)


@pytest.mark.parametrize("requested", [MIN_PART_SIZE - 1, 5 * 1024**3 + 1, -1])
def test_plan_refuses_part_sizes_out_of_bounds(requested: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        plan_parts(100 * MIB, requested_part_size=requested)
    assert refused.value.reason == "INVALID_PART_SIZE"


@pytest.mark.parametrize(
    "origin", ["*", "https://*.x.com", "app.example.com", "https://a.com/", "ftp://a.com"]
)
def test_cors_origins_must_be_exact(origin: str) -> None:
    with pytest.raises(SettingsError):
        parse_cors_origins((origin,))


def test_cors_origins_accepted() -> None:
    assert parse_cors_origins(("https://app.example.com", "http://localhost:5173")) == (
        "https://app.example.com",
        "http://localhost:5173",
    )


@pytest.mark.parametrize(
    "raw",
    [
        "[]",
        "{",
        '{"t": 5}',
        '{"t": {"max_upload_bytes": 0}}',
        '{"t": {"allowed_content_types": "image/*"}}',
        '{"t": {"x": 1}}',
    ],
)
def test_malformed_tenant_limits_are_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="FILESTORE_TENANT_LIMITS"):
        parse_tenant_limits(raw)
