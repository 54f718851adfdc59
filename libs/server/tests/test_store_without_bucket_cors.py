"""A store without bucket CORS (MinIO's community edition, RustFS answer ``NotImplemented``) is told
apart from one that refuses: the broker starts on the first and warns, and stops on the second."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from filestore.server.storage import ObjectStore, StoreConfig
from filestore.server.storage.config import StoreCredentials
from filestore.server.storage.errors import StorageRefused


def _s3_error(code: str, status: int) -> type[BaseHTTPRequestHandler]:
    class Answer(BaseHTTPRequestHandler):
        """Answers every request with one S3 error document, as storage does."""

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>no</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Answer


def _store_answering(code: str, status: int) -> Iterator[ObjectStore]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _s3_error(code, status))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield ObjectStore(
            StoreConfig(
                name="default",
                endpoint=endpoint,
                public_endpoint=endpoint,
                region="us-east-1",
                bucket="files",
                credentials=StoreCredentials("key", "secret"),
                control_timeout_s=2.0,
            )
        )
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def without_bucket_cors() -> Iterator[ObjectStore]:
    yield from _store_answering("NotImplemented", 501)


@pytest.fixture
def refusing() -> Iterator[ObjectStore]:
    yield from _store_answering("AccessDenied", 403)


async def test_a_store_without_bucket_cors_answers_false(without_bucket_cors: ObjectStore) -> None:
    assert await without_bucket_cors.apply_cors(["https://app.example.com"]) is False


async def test_a_store_that_refuses_still_raises(refusing: ObjectStore) -> None:
    with pytest.raises(StorageRefused) as raised:
        await refusing.apply_cors(["https://app.example.com"])
    assert raised.value.storage_code == "AccessDenied"
