"""A comma list of replica addresses is one channel balanced round_robin over real gRPC servers, in
plaintext and over TLS; what cannot be balanced is refused with a clear message."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc
import pytest

from filestore.core.channels import channel_target, plain_channel
from filestore.core.env import Env, SettingsError
from filestore.core.tls import TlsSettings
from filestore.stack.certificates import CertificateAuthority

WHO = "/filestore.test.Replica/Who"


@asynccontextmanager
async def replica(name: str, *, tls: tuple[bytes, bytes] | None = None) -> AsyncIterator[str]:
    """A gRPC server on a free port whose one method answers its name; yields host:port."""

    def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return name.encode()

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(who)
    service = grpc.method_handlers_generic_handler("filestore.test.Replica", {"Who": handler})
    server.add_generic_rpc_handlers((service,))
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls]))
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def answers(channel: grpc.aio.Channel, calls: int) -> collections.Counter[str]:
    call: Callable[..., object] = channel.unary_unary(WHO)
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(calls):
        reply = await call(b"", timeout=5, wait_for_ready=True)  # type: ignore[operator]
        seen[reply.decode()] += 1
    return seen


async def test_calls_are_spread_over_every_listed_replica() -> None:
    async with AsyncExitStack() as stack:
        addresses = [await stack.enter_async_context(replica(f"r{i}")) for i in range(3)]
        async with plain_channel(",".join(addresses)) as channel:
            seen = await answers(channel, 30)
    # round_robin: each ready replica in turn (pick_first would answer r0 thirty times).
    assert set(seen) == {"r0", "r1", "r2"}
    assert min(seen.values()) >= 5, seen


async def test_a_listed_replica_that_is_down_costs_nothing() -> None:
    async with replica("gone") as gone:
        pass  # stopped: its port refuses connections now
    async with replica("up") as up, plain_channel(f"{gone},{up}") as channel:
        seen = await answers(channel, 10)
    assert seen == {"up": 10}


async def test_balanced_over_tls_the_certificate_is_checked_against_the_replicas(tmp_path: Path) -> None:
    authority = CertificateAuthority.create(tmp_path, name="Filestore Test CA")
    issued = authority.server_certificate("replica", hosts=["127.0.0.1"])
    pair = (issued.key_file.read_bytes(), issued.cert_file.read_bytes())
    tls = TlsSettings(ca_file=str(authority.cert_file))
    async with (
        replica("a", tls=pair) as a,
        replica("b", tls=pair) as b,
        plain_channel(f"{a},{b}", tls=tls) as channel,
    ):
        # round_robin picks among the replicas whose connection is up: on a busy machine the second
        # handshake may finish after the first few calls, so enough calls to outlast it.
        seen = await answers(channel, 200)
    assert set(seen) == {"a", "b"}


def test_targets() -> None:
    assert channel_target("127.0.0.1:5001") == ("127.0.0.1:5001", [])
    target, options = channel_target("127.0.0.1:5001, 127.0.0.2:5001")
    assert target == "ipv4:127.0.0.1:5001,127.0.0.2:5001"
    assert dict(options)["grpc.default_authority"] == "127.0.0.1:5001"
    assert "round_robin" in dict(options)["grpc.service_config"]
    assert channel_target("[::1]:5001,[::1]:5002")[0] == "ipv6:[::1]:5001,[::1]:5002"
    assert "round_robin" in dict(channel_target("dns:///metadata:50051")[1])["grpc.service_config"]


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("metadata-0:50051,metadata-1:50051", "not an IP address; list IP addresses, or give one dns:///"),
        ("127.0.0.1:5001,[::1]:5002", "mixes IPv4 and IPv6"),
        ("127.0.0.1:5001,127.0.0.1", "is not ip:port"),
    ],
)
def test_lists_that_cannot_be_balanced_are_refused(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        channel_target(address)
    with pytest.raises(SettingsError, match="FILESTORE_METADATA_ADDR="):
        Env({"FILESTORE_METADATA_ADDR": address}).service_address("FILESTORE_METADATA_ADDR")


def test_service_addresses_from_the_environment() -> None:
    env = Env({"FILESTORE_METADATA_ADDR": " 10.0.0.5:50051 , 10.0.0.6:50051 "})
    assert env.service_address("FILESTORE_METADATA_ADDR") == "10.0.0.5:50051,10.0.0.6:50051"
    assert Env({}).service_address("FILESTORE_METADATA_ADDR", "127.0.0.1:50051") == "127.0.0.1:50051"
    assert Env({"X": "dns:///metadata:50051"}).service_address("X") == "dns:///metadata:50051"
    assert Env({"X": "metadata:50051"}).service_address("X") == "metadata:50051"
