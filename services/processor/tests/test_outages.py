"""What the worker counts as a dependency's outage (a fresh set of deliveries, never FAILED for it), and
that a read of an object that stalls ends as one.

The storage here is a socket that answers a GET with the start of a body and then nothing more, as a
store that is stopped mid-answer does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from filestore.core.channels import translated_errors
from filestore.core.errors import FilestoreError, NotFound, Unavailable
from filestore.processor.worker import is_outage
from filestore.server.dependencies import METADATA, dependency_channel
from filestore.server.storage import ObjectStore, StorageRefused, StoreConfig, StoreCredentials


def _refused(status: int, code: str) -> StorageRefused:
    return StorageRefused(f"storage refused: {code}", storage_code=code, http_status=status)


def _caused_by(cause: BaseException, reason: str = "STORAGE_UNAVAILABLE") -> Unavailable:
    try:
        raise Unavailable("storage", reason=reason) from cause
    except Unavailable as error:
        return error


async def test_a_metadata_call_that_failed_in_transport_is_an_outage() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    async with dependency_channel(
        address, token=lambda: "token", dependency=METADATA, timeout_s=5
    ) as channel:
        with pytest.raises(FilestoreError) as caught, translated_errors():
            await channel.unary_unary("/filestore.v1.MetadataService/GetFile")(b"")
    assert caught.value.reason == "METADATA_UNAVAILABLE"
    assert is_outage(caught.value)


def test_what_says_nothing_about_the_event_is_an_outage_and_the_rest_is_not() -> None:
    assert is_outage(Unavailable("bare transport failure"))
    assert is_outage(_refused(503, "SlowDown"))
    assert not is_outage(_refused(403, "AccessDenied"))
    assert not is_outage(_refused(404, "NoSuchKey"))
    assert not is_outage(_caused_by(TimeoutError("clamd took too long"), reason="SCANNER_UNAVAILABLE"))
    assert not is_outage(Unavailable("metadata's own verdict", reason="SOMETHING_ELSE"))
    assert not is_outage(NotFound("no such file", reason="FILE_NOT_FOUND"))


@contextlib.contextmanager
def stalling_storage(*, sent: bytes, declared: int) -> Iterator[str]:
    """An endpoint that answers every request with ``sent``, the start of a ``declared``-byte body,
    and then holds the connection open without sending more."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            held.append(connection)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                request += chunk
            head = f'HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nETag: "stalled"\r\n\r\n'
            connection.sendall(head.encode() + sent)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() the thread is blocked in
        listener.close()
        for connection in held:
            connection.close()
        thread.join(5)


def test_a_read_that_stalls_mid_object_ends_as_an_outage() -> None:
    """Without a read timeout the worker would wait on the socket for ever and the event would never
    be retried; with one, the read ends, and as an outage."""
    with stalling_storage(sent=b"x" * 1000, declared=1_000_000) as endpoint:
        store = ObjectStore(
            StoreConfig(
                name="stalling",
                endpoint=endpoint,
                public_endpoint=endpoint,
                region="us-east-1",
                bucket="bucket",
                credentials=StoreCredentials("access", "secret"),
                control_timeout_s=0.5,
                read_timeout_s=0.5,
            )
        )
        received: list[int] = []

        def read_all() -> None:
            for chunk in store.stream("originals/acme/file", chunk_bytes=64 * 1024):
                received.append(len(chunk))

        with pytest.raises(Unavailable) as caught:
            read_all()
    assert sum(received) < 1_000_000
    assert caught.value.reason == "STORAGE_UNAVAILABLE"
    assert is_outage(caught.value)
