"""Real SeaweedFS (weed mini) and NATS processes on free ports in a temporary directory."""

from __future__ import annotations

import stat
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import nats
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from filestore.stack import INFRASTRUCTURE, Stack, StackConfig, StackPorts, load_stack_json, pid_alive


def s3_client(stack: Stack, *, secret_key: str | None = None, anonymous: bool = False) -> Any:
    e = stack.endpoints
    return boto3.session.Session().client(
        "s3",
        endpoint_url=e.s3_endpoint,
        region_name=e.s3_region,
        aws_access_key_id=None if anonymous else e.s3_access_key,
        aws_secret_access_key=None if anonymous else (secret_key or e.s3_secret_key),
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            signature_version=UNSIGNED if anonymous else "s3v4",
        ),
    )


def leftover_weed_sockets(port: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port}.sock"))


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = StackConfig(
        home=tmp_path_factory.mktemp("infra") / "home", ports=StackPorts.free(), components=INFRASTRUCTURE
    )
    async with Stack(config) as running:
        yield running


async def test_s3_works_with_the_stack_credentials(stack: Stack) -> None:
    s3 = s3_client(stack)
    key = f"probe/{uuid.uuid4()}"
    s3.put_object(Bucket=stack.endpoints.bucket, Key=key, Body=b"hello")
    assert s3.get_object(Bucket=stack.endpoints.bucket, Key=key)["Body"].read() == b"hello"
    # Presigned URLs are how clients reach storage; the filer's JWT lockdown must not break them.
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": stack.endpoints.bucket, "Key": f"{key}-presigned"}, ExpiresIn=60
    )
    async with httpx.AsyncClient() as http:
        assert (await http.put(url, content=b"direct")).status_code == 200
    assert s3.get_object(Bucket=stack.endpoints.bucket, Key=f"{key}-presigned")["Body"].read() == b"direct"


async def test_s3_refuses_anonymous_and_wrongly_signed_requests(stack: Stack) -> None:
    e = stack.endpoints
    async with httpx.AsyncClient(base_url=e.s3_endpoint) as http:
        assert (await http.get(f"/{e.bucket}?list-type=2")).status_code == 403
        assert (await http.put(f"/{e.bucket}/anonymous", content=b"x")).status_code == 403
        assert (await http.get("/")).status_code == 403
    # The filer's own HTTP API would bypass S3 credentials entirely: it must demand a JWT.
    async with httpx.AsyncClient(base_url=e.filer_url) as http:
        assert (await http.get(f"/buckets/{e.bucket}/")).status_code == 401
        assert (await http.post(f"/buckets/{e.bucket}/evil", files={"f": b"x"})).status_code == 401
    with pytest.raises(ClientError, match=r"AccessDenied|Forbidden|403"):
        s3_client(stack, anonymous=True).put_object(Bucket=e.bucket, Key="anonymous", Body=b"x")
    with pytest.raises(ClientError, match=r"403|SignatureDoesNotMatch|Forbidden"):
        s3_client(stack, secret_key="not-the-secret").head_bucket(Bucket=e.bucket)


async def test_secrets_are_private_files(stack: Stack) -> None:
    paths = stack.paths
    for secret in (paths.s3_credentials, paths.auth_secret, paths.s3_identities, paths.upload_session_key):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(stack.endpoints.auth_secret) >= 32
    assert len(stack.endpoints.credentials.upload_session_key) >= 32
    assert stack.endpoints.s3_secret_key not in repr(stack.endpoints)
    assert stack.endpoints.credentials.upload_session_key not in repr(stack.endpoints)


async def test_jetstream_is_enabled(stack: Stack) -> None:
    nc = await nats.connect(stack.endpoints.nats_url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(name="PROBE", subjects=["probe.>"])
        ack = await js.publish("probe.one", b"1")
        assert ack.stream == "PROBE"
    finally:
        await nc.close()


async def test_stack_json_round_trips(stack: Stack) -> None:
    path = stack.write_stack_json()
    assert path == stack.paths.home / "stack.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.endpoints.s3_secret_key not in path.read_text()
    info = load_stack_json(path)
    assert info.endpoints == stack.endpoints
    assert dict(info.pids) == stack.pids
    assert info.components == INFRASTRUCTURE
    assert all(ok for ok, _ in (await stack.health()).values())


async def test_seaweedfs_kill_and_restart_keeps_objects(stack: Stack) -> None:
    e = stack.endpoints
    s3_client(stack).put_object(Bucket=e.bucket, Key="before-kill", Body=b"precious")
    old_pid = stack.pids["seaweedfs"]
    await stack.kill("seaweedfs")
    assert not pid_alive(old_pid)
    await stack.restart("seaweedfs")
    body = s3_client(stack).get_object(Bucket=e.bucket, Key="before-kill")["Body"].read()
    assert body == b"precious"


async def test_state_survives_stop_and_start_and_stop_leaves_nothing(stack: Stack) -> None:
    e = stack.endpoints
    s3_client(stack).put_object(Bucket=e.bucket, Key="before-restart", Body=b"kept")
    old_credentials = e.credentials
    pids = stack.pids
    assert set(pids) == set(INFRASTRUCTURE)

    await stack.stop()
    assert stack.pids == {}
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not leftover_weed_sockets(stack.config.ports.filer_grpc)

    await stack.start()
    assert stack.endpoints.credentials == old_credentials
    body = s3_client(stack).get_object(Bucket=e.bucket, Key="before-restart")["Body"].read()
    assert body == b"kept"
    nc = await nats.connect(stack.endpoints.nats_url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream().stream_info("PROBE")  # created before the restart
        assert info.state.messages == 1
    finally:
        await nc.close()
