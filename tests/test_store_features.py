"""The S3 features Filestore relies on, checked against the SeaweedFS this machine runs (docs/stores.md
says which store has which, and what Filestore does without one). A SeaweedFS upgrade that drops one
fails here, before it fails an upload."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from botocore.exceptions import ClientError

from filestore.stack import Stack, StackConfig, StackPorts
from tests.storage import admin_storage

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

MIB = 1024 * 1024


@pytest.fixture(scope="module")
async def s3(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[S3Client, str]]:
    home: Path = tmp_path_factory.mktemp("store-features")
    config = StackConfig(home=home, ports=StackPorts.free(), components=("seaweedfs",))
    async with Stack(config) as stack:
        yield admin_storage(stack), stack.endpoints.bucket


def refusal(call: Callable[[], Any]) -> tuple[str, int]:
    """S3's error code and HTTP status of a call expected to be refused."""
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response
    return str(error["Error"].get("Code")), int(error["ResponseMetadata"]["HTTPStatusCode"])


def sha256_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


async def test_conditional_writes_refuse_a_second_object_at_a_key(s3: tuple[S3Client, str]) -> None:
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="cond/a", Body=b"first", IfNoneMatch="*")
    assert refusal(
        lambda: client.put_object(Bucket=bucket, Key="cond/a", Body=b"second", IfNoneMatch="*")
    ) == (
        "PreconditionFailed",
        412,
    )
    upload = client.create_multipart_upload(Bucket=bucket, Key="cond/a")["UploadId"]
    part = client.upload_part(Bucket=bucket, Key="cond/a", UploadId=upload, PartNumber=1, Body=b"x" * 10)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    assert refusal(
        lambda: client.complete_multipart_upload(
            Bucket=bucket, Key="cond/a", UploadId=upload, MultipartUpload=parts, IfNoneMatch="*"
        )
    ) == ("PreconditionFailed", 412)
    assert client.get_object(Bucket=bucket, Key="cond/a")["Body"].read() == b"first"


async def test_checksums_are_verified_on_objects_and_parts_and_kept(s3: tuple[S3Client, str]) -> None:
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="sum/ok", Body=b"abc", ChecksumSHA256=sha256_b64(b"abc"))
    head = client.head_object(Bucket=bucket, Key="sum/ok", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256_b64(b"abc")
    wrong = sha256_b64(b"xyz")
    assert (
        refusal(lambda: client.put_object(Bucket=bucket, Key="sum/bad", Body=b"abc", ChecksumSHA256=wrong))[1]
        == 400
    )
    upload = client.create_multipart_upload(Bucket=bucket, Key="sum/parts", ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    assert (
        refusal(
            lambda: client.upload_part(
                Bucket=bucket,
                Key="sum/parts",
                UploadId=upload,
                PartNumber=1,
                Body=b"abc",
                ChecksumSHA256=wrong,
            )
        )[1]
        == 400
    )
    client.abort_multipart_upload(Bucket=bucket, Key="sum/parts", UploadId=upload)


async def test_upload_part_copy_takes_a_byte_range_of_another_object(s3: tuple[S3Client, str]) -> None:
    client, bucket = s3
    source = bytes(range(256)) * (6 * MIB // 256)
    client.put_object(Bucket=bucket, Key="copy/source", Body=source)
    upload = client.create_multipart_upload(Bucket=bucket, Key="copy/target")["UploadId"]
    copied = client.upload_part_copy(
        Bucket=bucket,
        Key="copy/target",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "copy/source"},
        CopySourceRange=f"bytes=0-{5 * MIB - 1}",
    )
    tail = client.upload_part(Bucket=bucket, Key="copy/target", UploadId=upload, PartNumber=2, Body=b"new")
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="copy/target",
        UploadId=upload,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]},
                {"PartNumber": 2, "ETag": tail["ETag"]},
            ]
        },
    )
    assert client.get_object(Bucket=bucket, Key="copy/target")["Body"].read() == source[: 5 * MIB] + b"new"


async def test_storage_classes_are_kept_and_unknown_ones_refused(s3: tuple[S3Client, str]) -> None:
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="class/ia", Body=b"x", StorageClass="STANDARD_IA")
    assert client.head_object(Bucket=bucket, Key="class/ia")["StorageClass"] == "STANDARD_IA"
    assert refusal(
        lambda: client.put_object(Bucket=bucket, Key="class/x", Body=b"x", StorageClass="BOGUS")
    ) == (
        "InvalidStorageClass",
        400,
    )


async def test_bucket_cors_and_a_post_policy_s_length_range(s3: tuple[S3Client, str]) -> None:
    client, bucket = s3
    rules = [
        {
            "AllowedOrigins": ["http://app.test"],
            "AllowedMethods": ["PUT"],
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag"],
        }
    ]
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})  # type: ignore[typeddict-item]
    (rule,) = client.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert (rule["AllowedOrigins"], rule.get("ExposeHeaders")) == (["http://app.test"], ["ETag"])
    client.delete_bucket_cors(Bucket=bucket)
    post = client.generate_presigned_post(
        bucket, "form/a", Conditions=[["content-length-range", 3, 3]], ExpiresIn=60
    )
    async with httpx.AsyncClient(timeout=30) as http:
        too_long = await http.post(post["url"], data=post["fields"], files={"file": ("f", b"abcdef")})
        exact = await http.post(post["url"], data=post["fields"], files={"file": ("f", b"abc")})
    assert too_long.status_code == 400
    assert "EntityTooLarge" in too_long.text
    assert exact.status_code == 204
    head = await asyncio.to_thread(client.head_object, Bucket=bucket, Key="form/a")
    assert head["ContentLength"] == 3
