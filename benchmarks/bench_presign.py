"""make bench-presign: what one presigned URL costs, against the floor of the signing math.

The floor is what SigV4 cannot avoid for one URL, measured here in the same run: SHA-256 of a
canonical request, the four HMAC key derivations (date, region, service, "aws4_request") and the
HMAC of the string to sign. The broker's signer (filestore.server.sigv4) caches the derived key
per day, so it can come close to (or under) that floor; botocore, the best-kept general signer, is
printed for comparison. Before timing anything, URLs from the broker's signer are sent to a real
SeaweedFS to show storage accepts them (and refuses a tampered one).

Ends with: RESULT presign_us=<x> floor_us=<y> floor_ratio=<x/y> sign_1000_parts_ms=<z>
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time

import boto3
import httpx
from botocore.config import Config

from benchmarks._common import best_per_call_us, temporary_stack
from filestore.core.keys import original_key
from filestore.server.sigv4 import SigV4Presigner
from filestore.v1 import resources_pb2

KEY = original_key("acme", "0b9f1c1e-5f5e-4c1e-9c4b-2d1f0e9d8c7b")
SHA256 = hashlib.sha256(b"benchmark").hexdigest()
REGION = "us-east-1"


def signing_floor(secret: bytes, canonical_request: bytes, amz_date: str) -> str:
    """The irreducible work of one SigV4 signature, with no caching and no string building."""
    date = amz_date[:8].encode()
    key = hmac.digest(b"AWS4" + secret, date, "sha256")
    key = hmac.digest(key, REGION.encode(), "sha256")
    key = hmac.digest(key, b"s3", "sha256")
    key = hmac.digest(key, b"aws4_request", "sha256")
    digest = hashlib.sha256(canonical_request).hexdigest()
    string_to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{amz_date[:8]}/{REGION}/s3/aws4_request\n{digest}"
    return hmac.digest(key, string_to_sign.encode(), "sha256").hex()


async def check_storage_accepts(presigner_for: dict[str, str]) -> None:
    """PUT an object and a part with the broker's signer against a real SeaweedFS."""
    async with temporary_stack(("seaweedfs",)) as stack:
        endpoints = stack.endpoints
        presigner = SigV4Presigner(
            endpoint=endpoints.s3_endpoint,
            region=endpoints.s3_region,
            access_key=endpoints.s3_access_key,
            secret_key=endpoints.s3_secret_key,
            bucket=endpoints.bucket,
        )
        storage = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoints.s3_endpoint,
            aws_access_key_id=endpoints.s3_access_key,
            aws_secret_access_key=endpoints.s3_secret_key,
            config=Config(
                region_name=endpoints.s3_region, signature_version="s3v4", s3={"addressing_style": "path"}
            ),
        )
        body = os.urandom(4096)
        put = presigner.presign_put(
            KEY,
            content_type="application/pdf",
            size=len(body),
            sha256_hex=hashlib.sha256(body).hexdigest(),
            expires_s=300,
        )
        part_body = os.urandom(5 * 1024**2)
        upload_id = (
            await asyncio.to_thread(storage.create_multipart_upload, Bucket=endpoints.bucket, Key=KEY + "-mp")
        )["UploadId"]
        part = presigner.presign_part(
            KEY + "-mp", upload_id=upload_id, part_number=1, size=len(part_body), expires_s=300
        )
        async with httpx.AsyncClient(timeout=60) as http:
            accepted = await http.put(put.url, content=body, headers=put.headers)
            tampered = await http.put(put.url, content=body[::-1], headers=put.headers)
            part_accepted = await http.put(part.url, content=part_body, headers=part.headers)
        presigner_for["put"] = str(accepted.status_code)
        presigner_for["tampered_put"] = str(tampered.status_code)
        presigner_for["part"] = str(part_accepted.status_code)
        if accepted.status_code != 200 or part_accepted.status_code != 200 or tampered.status_code < 400:
            raise SystemExit(f"storage did not behave as signed: {presigner_for}")


def main() -> None:
    statuses: dict[str, str] = {}
    asyncio.run(check_storage_accepts(statuses))
    print(
        f"storage (SeaweedFS) accepts the broker's URLs: PUT {statuses['put']}, part PUT {statuses['part']}; "
        f"tampered body refused with {statuses['tampered_put']}"
    )

    access, secret = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    presigner = SigV4Presigner(
        endpoint="http://127.0.0.1:8333",
        region=REGION,
        access_key=access,
        secret_key=secret,
        bucket="filestore",
    )
    canonical = (
        f"PUT\n/filestore/{KEY}\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={access}%2F20260102%2F"
        "us-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders="
        "content-length%3Bcontent-type%3Bhost%3Bx-amz-checksum-sha256\ncontent-length:4096\n"
        "content-type:application/pdf\nhost:127.0.0.1:8333\nx-amz-checksum-sha256:abc=\n\n"
        "content-length;content-type;host;x-amz-checksum-sha256\nUNSIGNED-PAYLOAD"
    ).encode()
    floor_us = best_per_call_us(
        lambda: signing_floor(secret.encode(), canonical, "20260102T030405Z"), number=20000
    )
    presign_us = best_per_call_us(
        lambda: presigner.presign_put(
            KEY, content_type="application/pdf", size=4096, sha256_hex=SHA256, expires_s=900
        ),
        number=20000,
    )
    botocore_client = boto3.session.Session().client(
        "s3",
        endpoint_url="http://127.0.0.1:8333",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(region_name=REGION, signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    params = {"Bucket": "filestore", "Key": KEY, "ContentType": "application/pdf", "ContentLength": 4096}
    botocore_us = best_per_call_us(
        lambda: botocore_client.generate_presigned_url("put_object", Params=params, ExpiresIn=900), number=500
    )

    def sign_1000_parts() -> None:
        # What SignParts does for 1,000 parts: a URL per part and the PartUrl messages.
        urls = []
        for number in range(1, 1001):
            signed = presigner.presign_part(
                KEY, upload_id="u" * 40, part_number=number, size=8 * 1024**2, expires_s=900
            )
            urls.append(
                resources_pb2.PartUrl(
                    part_number=number,
                    size=8 * 1024**2,
                    request=resources_pb2.PresignedRequest(
                        method="PUT", url=signed.url, headers=signed.headers
                    ),
                )
            )

    runs = []
    sign_1000_parts()
    for _ in range(7):
        started = time.perf_counter()
        sign_1000_parts()
        runs.append((time.perf_counter() - started) * 1000)
    sign_ms = min(runs)

    print(f"signing floor (sha256 + 4 key derivations + 1 hmac): {floor_us:.2f} us")
    print(f"broker signer, one PUT URL:   {presign_us:.2f} us ({presign_us / floor_us:.2f}x floor)")
    print(f"botocore presign, one PUT URL: {botocore_us:.2f} us ({botocore_us / floor_us:.1f}x floor)")
    print(f"broker signer vs botocore (same run):                {botocore_us / presign_us:.1f}x faster")
    print(f"1,000 part URLs with PartUrl messages:               {sign_ms:.2f} ms")
    print(
        f"RESULT presign_us={presign_us:.2f} floor_us={floor_us:.2f} floor_ratio={presign_us / floor_us:.2f} "
        f"sign_1000_parts_ms={sign_ms:.2f}"
    )


if __name__ == "__main__":
    main()
