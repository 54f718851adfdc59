"""What the tests need to start stacks and services of their own beside the session's stack: a
scratch PostgreSQL database, services that write their spans to files, a second broker's settings."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from filestore.core.env import Env
from filestore.core.tls import TlsSettings
from filestore.stack import SERVICES, Stack
from filestore.stack.certificates import CertificateAuthority

DEFAULT_TEST_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def scratch_postgres_database() -> AsyncIterator[str]:
    """A database of its own on the local PostgreSQL server (TEST_DATABASE_URL), dropped afterwards."""
    base = make_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    name = f"filestore_it_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database=base.database,
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def traced_services(home: Path) -> dict[str, dict[str, str]]:
    """Every service writes its spans as JSON lines to ``home/traces/<service>.jsonl``: cheap, and
    what test_observability reads to follow one upload's trace across the services."""
    return {
        service: {
            "FILESTORE_TRACING_EXPORTER": "file",
            "FILESTORE_TRACING_FILE": str(home / "traces" / f"{service}.jsonl"),
        }
        for service in SERVICES
    }


@contextmanager
def own_service_tls(stack: Stack) -> Iterator[tuple[dict[str, str], TlsSettings | None]]:
    """For a service the tests start beside a TLS stack, called by a client set up for that stack
    (the SDK takes one CA for all its services): what the service serves TLS with, a certificate for
    127.0.0.1 from a throwaway CA of the test's own (the stack's CA key never leaves its volume), and
    what the client then connects with, the stack's settings trusting both CAs. Nothing and None for
    a plaintext stack."""
    tls = stack.endpoints.tls
    if tls is None or tls.ca_file is None:
        yield {}, None
        return
    with tempfile.TemporaryDirectory(prefix="filestore-own-service-") as scratch:
        authority = CertificateAuthority.create(Path(scratch) / "ca")
        served = authority.server_certificate("own-service", hosts=["127.0.0.1"])
        trust = Path(scratch) / "trust.pem"
        trust.write_bytes(Path(tls.ca_file).read_bytes() + authority.cert_file.read_bytes())
        serving = {
            "FILESTORE_TLS_CERT_FILE": str(served.cert_file),
            "FILESTORE_TLS_KEY_FILE": str(served.key_file),
        }
        yield serving, dataclasses.replace(tls, ca_file=str(trust))


def client_tls_env(stack: Stack) -> dict[str, str]:
    """For a service of the tests' own that calls a TLS stack (the compose stack): the stack's CA for
    the services, NATS and storage, and the users' client certificate where mutual TLS asks for one
    (the service's identity is its token). Nothing for a plaintext stack; it serves plaintext itself."""
    tls = stack.endpoints.tls
    if tls is None or tls.ca_file is None:
        return {}
    env = {
        "FILESTORE_TLS_CA_FILE": tls.ca_file,
        "FILESTORE_NATS_CA_FILE": tls.ca_file,
        "FILESTORE_S3_CA_FILE": tls.ca_file,
    }
    if tls.client_cert_file is not None and tls.client_key_file is not None:
        env |= {
            "FILESTORE_TLS_CLIENT_CERT_FILE": tls.client_cert_file,
            "FILESTORE_TLS_CLIENT_KEY_FILE": tls.client_key_file,
            "FILESTORE_NATS_CLIENT_CERT_FILE": tls.client_cert_file,
            "FILESTORE_NATS_CLIENT_KEY_FILE": tls.client_key_file,
        }
    return env


def broker_env(stack: Stack, **extra: str) -> Env:
    """Settings for a second broker, in this process, on the stack's metadata, storage and NATS."""
    endpoints = stack.endpoints
    return Env(
        {
            **client_tls_env(stack),
            "FILESTORE_LISTEN": "127.0.0.1:0",
            "FILESTORE_AUTH_SECRET": endpoints.auth_secret,
            "FILESTORE_METADATA_ADDR": endpoints.metadata_addr,
            "FILESTORE_S3_ENDPOINT": endpoints.s3_endpoint,
            "FILESTORE_S3_ACCESS_KEY": endpoints.s3_access_key,
            "FILESTORE_S3_SECRET_KEY": endpoints.s3_secret_key,
            "FILESTORE_S3_BUCKET": endpoints.bucket,
            "FILESTORE_S3_REGION": endpoints.s3_region,
            "FILESTORE_NATS_URL": endpoints.nats_url,
            "FILESTORE_REAPER_INTERVAL_S": "0",
            # The stack's brokers' key: every replica must hold the same one.
            "FILESTORE_UPLOAD_SESSION_KEY": endpoints.credentials.upload_session_key,
            **extra,
        }
    )
