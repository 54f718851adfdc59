"""Least privilege in storage: each service's own S3 identity can do what that service does, and no
more. Checked against the real SeaweedFS of the stack, with the very keys the services are given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from filestore.stack import Stack

KEY = "originals/identities-test/object"


def _client(stack: Stack, keys: tuple[str, str]) -> Any:
    endpoints = stack.endpoints
    return boto3.client(
        "s3",
        endpoint_url=endpoints.s3_endpoint,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        config=Config(
            region_name=endpoints.s3_region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
        verify=endpoints.tls.ca_file if endpoints.tls is not None else None,
    )


def _outcome(call: Callable[[], object]) -> str:
    """``ok``, or the S3 error code storage answered with."""
    try:
        call()
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return "ok"


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("download", {"read": "ok", "write": "AccessDenied", "delete": "AccessDenied"}),
        # Deleting needs SeaweedFS's Write action, which also covers PUT; the identity still cannot
        # read a single byte, and the metadata service never writes.
        ("metadata", {"read": "AccessDenied", "write": "ok", "delete": "ok"}),
        ("processor", {"read": "ok", "write": "ok", "delete": "ok"}),
        ("upload", {"read": "ok", "write": "ok", "delete": "ok"}),
    ],
)
def test_each_service_identity_has_only_what_it_needs(
    stack: Stack, service: str, expected: dict[str, str]
) -> None:
    endpoints = stack.endpoints
    bucket = endpoints.bucket
    admin = _client(stack, (endpoints.s3_access_key, endpoints.s3_secret_key))
    own = _client(stack, endpoints.credentials.service_s3_keys[service])
    scratch = f"{KEY}-{service}"
    admin.put_object(Bucket=bucket, Key=KEY, Body=b"kept")
    admin.put_object(Bucket=bucket, Key=scratch, Body=b"x")

    def read() -> bytes:
        body: bytes = own.get_object(Bucket=bucket, Key=KEY)["Body"].read()
        return body

    outcomes = {
        "read": _outcome(read),
        "write": _outcome(lambda: own.put_object(Bucket=bucket, Key=f"{scratch}-new", Body=b"x")),
        "delete": _outcome(lambda: own.delete_object(Bucket=bucket, Key=scratch)),
    }
    anonymous = _outcome(lambda: _client(stack, ("NOBODY", "nothing")).get_object(Bucket=bucket, Key=KEY))
    # Nothing left behind: the reconciler would rightly call these objects without records.
    for key in (f"{scratch}-new", scratch, KEY):
        admin.delete_object(Bucket=bucket, Key=key)
    assert outcomes == expected
    assert anonymous != "ok"
