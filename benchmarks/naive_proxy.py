"""The upload path Filestore exists to avoid, written for ``make bench-proxy`` only: an app server that
receives the file's bytes itself and then re-uploads them to S3 with boto3.

Naive, but honest, the way a typical app would be written:

* The body is received completely before anything else happens, and spooled to a temporary file,
  which is what the common frameworks do with uploads by default: Django's
  ``TemporaryFileUploadHandler`` (above 2.5 MB), Werkzeug/Flask (above 500 kB) and Starlette/FastAPI's
  ``UploadFile`` (a ``SpooledTemporaryFile`` that rolls to disk past 1 MiB). A temporary file rather
  than memory because that is those defaults, and because holding 1 GiB in the process (``await
  request.body()``) would only make the proxy look worse on memory; the disk file costs page cache,
  not the proxy's RSS.
* Then ``boto3``'s ``upload_file`` sends it to storage with the same part size and concurrency as
  the direct path's client, and boto3's defaults otherwise.

Kind to the proxy on purpose: the client sends the raw body (a PUT with Content-Length), so there is
no multipart/form-data parsing, and the proxy keeps no catalogue (no database rows, no quota); it
only moves bytes. The server is the standard library's threaded HTTP server (one thread per
connection): no framework dependency for a benchmark, and reading a socket into a file in 1 MiB
reads is the same work whichever framework wraps it.

Run: ``python -m benchmarks.naive_proxy`` with ``PROXY_S3_ENDPOINT``, ``PROXY_S3_REGION``,
``PROXY_S3_BUCKET``, ``PROXY_PART_SIZE``, ``PROXY_CONCURRENCY``, ``PROXY_SPOOL_DIR`` and boto3's own
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``. It listens on a free port of ``PROXY_LISTEN_HOST``
(default loopback; ``make bench-proxy-shaped`` gives it the shaped link's address) and prints
``listening <port>`` once ready. ``PUT /<anything>`` answers 201 with the object's key and size and
the seconds spent receiving the body and storing it. ``GET /<key>`` answers the object's bytes,
streamed from storage as they come (boto3's ``get_object`` body, read ``READ_CHUNK`` at a time), the
way an app serves a download it will not hand a storage URL for: kinder to the proxy than spooling
the object first, since its two hops overlap.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

#: How much of the body one socket read asks for (what frameworks use is of this order: 64 kB-1 MiB).
READ_CHUNK = 1024 * 1024


class NaiveUploadProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, s3: S3Client, bucket: str, transfer: TransferConfig, spool_dir: str) -> None:
        super().__init__((os.environ.get("PROXY_LISTEN_HOST", "127.0.0.1"), 0), UploadHandler)
        self.s3 = s3
        self.bucket = bucket
        self.transfer = transfer
        self.spool_dir = spool_dir


class UploadHandler(BaseHTTPRequestHandler):
    # Keep-alive, like any app server behind a load balancer.
    protocol_version = "HTTP/1.1"
    server: NaiveUploadProxy

    def do_PUT(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            return
        remaining = int(length)
        started = time.perf_counter()
        with tempfile.NamedTemporaryFile(dir=self.server.spool_dir, prefix="upload-") as spool:
            while remaining:
                chunk = self.rfile.read(min(READ_CHUNK, remaining))
                if not chunk:
                    self.close_connection = True
                    return  # the client went away mid-body
                spool.write(chunk)
                remaining -= len(chunk)
            spool.flush()
            received = time.perf_counter()
            # The key comes from an id, never from the client's path (as in Filestore itself).
            key = f"proxy/{uuid.uuid4()}"
            self.server.s3.upload_file(spool.name, self.server.bucket, key, Config=self.server.transfer)
        stored = time.perf_counter()
        # The two phases' times let the benchmark show where the proxy's wall time goes.
        answer = {
            "key": key,
            "size": int(length),
            "receive_s": received - started,
            "store_s": stored - received,
        }
        self._answer(HTTPStatus.CREATED, answer)

    def do_GET(self) -> None:
        key = self.path.lstrip("/")
        try:
            found = self.server.s3.get_object(Bucket=self.server.bucket, Key=key) if key else None
        except self.server.s3.exceptions.NoSuchKey:
            found = None
        if found is None:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no object {key!r}"})
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(found["ContentLength"]))
        self.end_headers()
        body = found["Body"]
        try:
            while chunk := body.read(READ_CHUNK):
                self.wfile.write(chunk)
        finally:
            body.close()

    def _answer(self, status: HTTPStatus, document: dict[str, object]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one log line per request would be noise in the benchmark's output."""


def main() -> None:
    concurrency = int(os.environ["PROXY_CONCURRENCY"])
    part_size = int(os.environ["PROXY_PART_SIZE"])
    s3: S3Client = boto3.client(
        "s3",
        endpoint_url=os.environ["PROXY_S3_ENDPOINT"],
        region_name=os.environ["PROXY_S3_REGION"],
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=concurrency + 2),
    )
    transfer = TransferConfig(
        multipart_threshold=part_size,
        multipart_chunksize=part_size,
        max_concurrency=concurrency,
        use_threads=True,
    )
    server = NaiveUploadProxy(
        s3=s3,
        bucket=os.environ["PROXY_S3_BUCKET"],
        transfer=transfer,
        spool_dir=os.environ["PROXY_SPOOL_DIR"],
    )
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
