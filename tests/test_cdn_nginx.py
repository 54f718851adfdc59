"""Public files through a real CDN edge: nginx (the Debian package) with ``secure_link`` and a cache in
front of the stack's SeaweedFS, configured from ``deploy/nginx/filestore-cdn.conf.template``.

A download service of the test's own (the stack's, plus ``FILESTORE_CDN_*``) hands out the links. The
edge reads the origin through the S3 API, signing with SigV4 under the download service's read-only
storage identity, so SeaweedFS stays closed to anonymous readers throughout.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.download.cdn import NginxSecureLinkUrls
from filestore.stack import ManagedProcess, Stack
from filestore.stack.probes import probe_grpc_health
from filestore.stack.process import tail
from filestore.v1 import download_service_pb2, download_service_pb2_grpc, metadata_service_pb2, resources_pb2
from tests.support import Client, ClientFactory, StatusEvents, free_port, upload_until_processed

pytestmark = pytest.mark.local_stack

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "nginx"
TEMPLATE = DEPLOY / "filestore-cdn.conf.template"
NJS_SCRIPT = DEPLOY / "filestore_cdn.js"
# Where Debian's libnginx-mod-http-js installs the module.
NJS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
PLACEHOLDER = re.compile(r"\$\{(FILESTORE_CDN_[A-Z_]+)\}")
START_TIMEOUT_S = 30.0
# How long a request's access-log line may lag behind its response.
LOG_WAIT_S = 5.0


def render_template(template: str, values: Mapping[str, str]) -> str:
    """What ``envsubst`` with the placeholders named does; a placeholder left unset is an error."""
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


@dataclass(frozen=True, slots=True)
class Edge:
    """One running nginx: its base URL and its access log (one line per request, origin status in it)."""

    base_url: str
    access_log: Path

    async def origin_statuses(self, key: str, *, requests: int) -> list[str]:
        """``$upstream_status`` of the GETs of ``key`` so far: ``-`` when the origin was not asked
        (a cache hit, or a refusal). nginx writes a request's line in its log phase, after the
        response has left, so this waits (briefly) until ``requests`` lines are there."""
        pattern = re.compile(rf'"GET /{re.escape(key)}" \d+ \d+ cache=\S+ origin=(\S+)$')
        deadline = time.monotonic() + LOG_WAIT_S
        while True:
            lines = self.access_log.read_text(encoding="utf-8").splitlines()
            statuses = [m.group(1) for line in lines if (m := pattern.search(line))]
            if len(statuses) >= requests or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running_nginx(stack: Stack, prefix: Path, *, secret: str | None) -> AsyncIterator[Edge]:
    """nginx from the repository's template, with its logs, cache and temp files under ``prefix``."""
    endpoints = stack.endpoints
    port = free_port()
    for directory in ("logs", "temp"):
        (prefix / directory).mkdir(parents=True, exist_ok=True)
    config = prefix / "filestore-cdn.conf"
    config.write_text(
        render_template(
            TEMPLATE.read_text(encoding="utf-8"),
            {
                "FILESTORE_CDN_LISTEN": f"127.0.0.1:{port}",
                "FILESTORE_CDN_ORIGIN": urlsplit(endpoints.s3_endpoint).netloc,
                "FILESTORE_CDN_ORIGIN_BUCKET": endpoints.bucket,
                "FILESTORE_CDN_ORIGIN_REGION": endpoints.s3_region,
                "FILESTORE_CDN_NJS_MODULE": str(NJS_MODULE),
                "FILESTORE_CDN_NJS_SCRIPT": str(NJS_SCRIPT),
            },
        ),
        encoding="utf-8",
    )
    # The download service's identity: Read on the bucket, nothing else (what the edge needs).
    access_key, secret_key = endpoints.credentials.service_s3_keys["download"]
    env = {
        **os.environ,
        "FILESTORE_CDN_ORIGIN_ACCESS_KEY": access_key,
        "FILESTORE_CDN_ORIGIN_SECRET_KEY": secret_key,
    }
    env.pop("FILESTORE_CDN_NGINX_SECRET", None)
    if secret is not None:
        env["FILESTORE_CDN_NGINX_SECRET"] = secret
    directives = "daemon off;"
    if os.geteuid() == 0:
        # Workers would otherwise run as nobody, who cannot enter pytest's private temp directory.
        directives += f" user {pwd.getpwuid(0).pw_name};"
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    assert nginx is not None, "nginx is not installed (make system-deps installs it)"
    # -e: the error log before the configuration is read, which would otherwise be the system's.
    argv = [nginx, "-p", f"{prefix}/", "-c", str(config), "-e", str(prefix / "logs" / "error.log")]
    process = ManagedProcess("cdn-nginx", [*argv, "-g", directives], log_path=prefix / "nginx.out", env=env)
    edge = Edge(base_url=f"http://127.0.0.1:{port}", access_log=prefix / "logs" / "access.log")
    process.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if process.returncode is not None:
                    pytest.fail(f"nginx exited with {process.returncode}:\n{_logs(prefix)}")
                try:
                    if (await http.get(edge.base_url + "/")).status_code == 403:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx did not answer within {START_TIMEOUT_S:g}s:\n{_logs(prefix)}")
                await asyncio.sleep(0.1)
        yield edge
    finally:
        await process.stop(5.0)


def _logs(prefix: Path) -> str:
    return tail(prefix / "nginx.out") + "\n" + tail(prefix / "logs" / "error.log")


@dataclass(frozen=True, slots=True)
class Cdn:
    edge: Edge
    secret: str
    download_addr: str
    #: For the tokens of the users calling that download service.
    auth_secret: str

    def signer(self) -> NginxSecureLinkUrls:
        return NginxSecureLinkUrls(self.edge.base_url, self.secret)


@pytest.fixture(scope="module")
async def cdn(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cdn]:
    """nginx, and a download service that signs links for it (the stack's own has no CDN)."""
    secret = secrets.token_urlsafe(32)
    prefix = tmp_path_factory.mktemp("cdn-nginx")
    async with running_nginx(stack, prefix, secret=secret) as edge:
        stacks_download = stack.process("download")
        address = f"127.0.0.1:{free_port()}"
        env = {
            **stacks_download.env,
            "FILESTORE_LISTEN": address,
            "FILESTORE_METRICS_PORT": "0",
            # The stack's span files belong to its own services.
            "FILESTORE_TRACING_EXPORTER": "none",
            "FILESTORE_CDN_BASE_URL": edge.base_url,
            "FILESTORE_CDN_SIGNING": "nginx",
            "FILESTORE_CDN_NGINX_SECRET": secret,
        }
        download = ManagedProcess(
            "cdn-download", stacks_download.argv, log_path=prefix / "download.log", env=env, cwd=prefix
        )
        download.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not (await probe_grpc_health(address))[0]:
                if download.returncode is not None or time.monotonic() > deadline:
                    pytest.fail(f"the CDN download service did not start:\n{tail(download.log_path)}")
                await asyncio.sleep(0.2)
            yield Cdn(
                edge=edge, secret=secret, download_addr=address, auth_secret=stack.endpoints.auth_secret
            )
        finally:
            await download.stop(5.0)


async def _get(url: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, url)


async def _download_url(cdn: Cdn, client: Client, file_id: str) -> str:
    token = mint_token(cdn.auth_secret, subject=client.subject, tenant=client.tenant)
    async with insecure_channel(cdn.download_addr, token=lambda: token) as channel:
        answer = await download_service_pb2_grpc.DownloadServiceStub(channel).GetDownloadUrl(
            download_service_pb2.GetDownloadUrlRequest(file_id=file_id)
        )
    return str(answer.url)


async def _upload(
    client: Client, status_events: StatusEvents, body: bytes, *, content_type: str, public: bool
) -> resources_pb2.File:
    file = await upload_until_processed(
        client, status_events, body, name="notes.txt", content_type=content_type
    )
    assert file.status == resources_pb2.FILE_STATUS_READY, file.status_reason
    if public:
        file = await client.metadata.UpdateFile(
            metadata_service_pb2.UpdateFileRequest(
                file=resources_pb2.File(id=file.id, visibility=resources_pb2.VISIBILITY_PUBLIC),
                update_mask=FieldMask(paths=["visibility"]),
            )
        )
    return file


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


def _flip_first_char(token: str) -> str:
    # The first character: its six bits all count. Some bits of a base64 token's last character are
    # padding, which decoders drop, so changing it may leave the digest as it was.
    return ("A" if token[0] != "A" else "B") + token[1:]


async def test_a_signed_link_is_served_then_cached_and_a_changed_one_refused(
    cdn: Cdn, client_for: ClientFactory, status_events: StatusEvents
) -> None:
    client = client_for()
    body = b"public words served from the edge\n" * 200
    file = await _upload(client, status_events, body, content_type="text/plain", public=True)
    url = await _download_url(cdn, client, file.id)
    assert url.startswith(cdn.edge.base_url + "/"), url
    key = urlsplit(url).path.removeprefix("/")

    first = await _get(url)
    assert (first.status_code, first.content) == (200, body), first.text
    assert first.headers["content-type"] == "text/plain"
    assert first.headers["x-cache-status"] == "MISS"
    second = await _get(url)
    assert (second.status_code, second.content) == (200, body)
    assert second.headers["x-cache-status"] == "HIT"
    # The origin saw the first request only.
    assert await cdn.edge.origin_statuses(key, requests=2) == ["200", "-"]
    assert (await _get(url, "HEAD")).status_code == 200

    # The entry is cached now, and still nothing but the exact signed link reaches it.
    query = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
    tampered = {
        "md5": _with_query(url, md5=_flip_first_char(query["md5"])),
        "expires": _with_query(url, expires=str(int(query["expires"]) + 3600)),
        "path": url.replace(key, key[:-1] + ("0" if key[-1] != "0" else "1")),
        "no signature": url.split("?")[0],
    }
    refused = {name: (await _get(changed)).status_code for name, changed in tampered.items()}
    assert refused == dict.fromkeys(tampered, 403)
    assert (await _get(url, "POST")).status_code == 403

    # Correctly signed, but past its expiry (signed here with the same secret and formula).
    expired = cdn.signer().url(key, expires=datetime.now(UTC) - timedelta(seconds=5))
    assert (await _get(expired)).status_code == 410
    # None of the refused requests reached the origin either. The GETs of this key so far: the
    # two above, the three tampered ones that kept the path, and the expired one.
    statuses = await cdn.edge.origin_statuses(key, requests=6)
    assert [status for status in statuses if status != "-"] == ["200"]


async def test_private_objects_get_no_cdn_link_and_the_edge_refuses_them(
    stack: Stack, cdn: Cdn, client_for: ClientFactory, status_events: StatusEvents
) -> None:
    client = client_for()
    private = await _upload(
        client, status_events, b"private words\n" * 10, content_type="text/plain", public=False
    )
    url = await _download_url(cdn, client, private.id)
    # A presigned storage URL (path-style: /bucket/key), never a CDN link.
    assert url.startswith(stack.endpoints.s3_endpoint + f"/{stack.endpoints.bucket}/"), url
    key = urlsplit(url).path.removeprefix(f"/{stack.endpoints.bucket}/")

    forged = NginxSecureLinkUrls(cdn.edge.base_url, "not-the-edge-secret-at-all").url(
        key, expires=datetime.now(UTC) + timedelta(minutes=5)
    )
    for attempt in (f"{cdn.edge.base_url}/{key}", forged):
        assert (await _get(attempt)).status_code == 403
    assert await cdn.edge.origin_statuses(key, requests=2) == ["-", "-"]


async def test_a_public_file_stored_as_a_risky_type_gets_no_cdn_link(
    stack: Stack, cdn: Cdn, client_for: ClientFactory, status_events: StatusEvents
) -> None:
    # The edge serves the Content-Type stored with the object, which is the declared one; plain
    # words declared as HTML sniff as text/plain, yet a browser would render them as HTML.
    client = client_for()
    page = await _upload(
        client, status_events, b"plain words declared as html\n", content_type="text/html", public=True
    )
    assert page.sniffed_content_type == "text/plain"
    url = await _download_url(cdn, client, page.id)
    assert url.startswith(stack.endpoints.s3_endpoint + "/"), url
    assert "response-content-type=text%2Fplain" in url


async def test_an_edge_without_its_secret_serves_nothing(
    stack: Stack, cdn: Cdn, client_for: ClientFactory, status_events: StatusEvents, tmp_path: Path
) -> None:
    client = client_for()
    body = b"public, but the edge is misconfigured\n"
    file = await _upload(client, status_events, body, content_type="text/plain", public=True)
    url = await _download_url(cdn, client, file.id)
    assert (await _get(url)).status_code == 200
    async with running_nginx(stack, tmp_path / "edge", secret=None) as misconfigured:
        # An empty secret must not turn into an MD5 anybody can compute.
        unkeyed = NginxSecureLinkUrls(misconfigured.base_url, "").url(
            urlsplit(url).path.removeprefix("/"), expires=datetime.now(UTC) + timedelta(minutes=5)
        )
        same_link = url.replace(cdn.edge.base_url, misconfigured.base_url)
        assert [(await _get(link)).status_code for link in (same_link, unkeyed)] == [503, 503]
    assert await misconfigured.origin_statuses(urlsplit(url).path.removeprefix("/"), requests=2) == [
        "-",
        "-",
    ]
