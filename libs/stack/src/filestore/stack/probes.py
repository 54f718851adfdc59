"""One-shot health probes. Each answers (healthy, detail) and never raises for an unhealthy target.

Given ``tls`` (a TLS stack's CA and client certificate), a probe speaks TLS, verifying the target
against the CA and presenting the client certificate where the target demands one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from filestore.core.channels import plain_channel
from filestore.core.tls import TlsSettings

__all__ = ["probe_clamd", "probe_grpc_health", "probe_nats", "probe_s3"]


def _s3_client(
    endpoint: str, region: str, access_key: str | None, secret_key: str | None, ca_file: str | None = None
) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        connect_timeout=1.0,
        read_timeout=2.0,
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path"},
        signature_version=UNSIGNED if access_key is None else "s3v4",
    )
    # A private session: the default one is not safe to build clients from in worker threads.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
        verify=ca_file,
    )


def _head_bucket(
    endpoint: str, region: str, bucket: str, access_key: str, secret_key: str, *, ca_file: str | None
) -> tuple[bool, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _s3_client(endpoint, region, access_key, secret_key, ca_file).head_bucket(Bucket=bucket)
    except ClientError as exc:
        return False, f"HeadBucket {bucket}: {exc.response.get('Error', {}).get('Code', exc)}"
    except BotoCoreError as exc:
        return False, f"HeadBucket {bucket}: {exc}"
    return True, f"bucket {bucket} reachable"


def _volume_server_registered(master_url: str) -> tuple[bool, str]:
    """Whether a volume server has registered with the master. HeadBucket only needs the filer; reads
    of objects written before a restart fail until the volume server has reported its volumes."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{master_url}/dir/status", timeout=2.0) as response:
            status = json.load(response)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return False, f"master /dir/status: {exc}"
    nodes = [
        node
        for center in status.get("Topology", {}).get("DataCenters") or []
        for rack in center.get("Racks") or []
        for node in rack.get("DataNodes") or []
    ]
    return (True, "volume server registered") if nodes else (False, "no volume server registered yet")


async def probe_s3(
    endpoint: str,
    *,
    region: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    master_url: str | None = None,
    tls: TlsSettings | None = None,
) -> tuple[bool, str]:
    """Ready when an authenticated HeadBucket succeeds (S3, filer and the bucket work) and, given the
    master's URL, a volume server has registered (objects can be read and written)."""
    ca_file = tls.ca_file if tls is not None else None
    ok, detail = await asyncio.to_thread(
        functools.partial(_head_bucket, endpoint, region, bucket, access_key, secret_key, ca_file=ca_file)
    )
    if not ok or master_url is None:
        return ok, detail
    return await asyncio.to_thread(_volume_server_registered, master_url)


def _ssl_context(tls: TlsSettings | None) -> ssl.SSLContext | None:
    return tls.client_context() if tls is not None else None


def _nats_healthz(monitor_url: str, tls: TlsSettings | None) -> tuple[bool, str]:
    # The full check, not js-enabled-only: after a restart it waits until the streams are recovered.
    url = f"{monitor_url}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=_ssl_context(tls)) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return False, f"healthz: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"healthz: {exc}"
    status = body.get("status") if isinstance(body, dict) else None
    return status == "ok", f"healthz: {status}"


async def probe_nats(monitor_url: str, *, tls: TlsSettings | None = None) -> tuple[bool, str]:
    """Ready when the monitor's healthz answers ok: JetStream on, its streams and consumers current."""
    return await asyncio.to_thread(_nats_healthz, monitor_url, tls)


def _http_health(url: str, tls: TlsSettings | None) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1.0, context=_ssl_context(tls)) as response:
            return response.status == 200, f"healthz: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"healthz: HTTP {exc.code}"
    except OSError as exc:
        return False, f"healthz: {exc}"


async def probe_http_health(url: str, *, tls: TlsSettings | None = None) -> tuple[bool, str]:
    """Ready when ``url``/healthz answers 200 (the browser face)."""
    return await asyncio.to_thread(_http_health, url, tls if url.startswith("https:") else None)


async def probe_grpc_health(
    address: str, *, tls: TlsSettings | None = None, rpc_timeout_s: float = 1.0
) -> tuple[bool, str]:
    """Ready when grpc.health.v1 Check for the overall server (service "") answers SERVING."""
    # A fresh channel per probe: a shared one would back off exponentially while the server boots.
    async with plain_channel(address, tls=tls) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            return False, f"health: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"health: {status}"


async def probe_clamd(address: str, *, timeout_s: float = 1.0) -> tuple[bool, str]:
    """Ready when clamd answers PING with PONG, which it does only once its signatures are loaded."""
    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, TimeoutError) as exc:
        return False, f"clamd: {exc or type(exc).__name__}"
    try:
        writer.write(b"zPING\0")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(64), timeout_s)
    except (OSError, TimeoutError) as exc:
        return False, f"clamd: {exc or type(exc).__name__}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    answer = reply.rstrip(b"\0\n").decode(errors="replace")
    return answer == "PONG", f"clamd: {answer or 'no answer'}"
