"""TLS, mutual TLS, and tokens from an identity provider (RS256/ES256, public key or JWKS)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from filestore.core.auth import TokenVerifier, current_principal, mint_token
from filestore.core.channels import service_channel, translated_errors
from filestore.core.errors import FilestoreError, Unauthenticated
from filestore.core.tls import TlsSettings
from filestore.server import healthcheck
from filestore.server.bootstrap import ServerHandle, create_server
from filestore.stack.certificates import CertificateAuthority

SECRET = "m" * 40
SERVICE = "test.Tls"


async def _whoami(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return current_principal().subject.encode()


def _register(server: grpc.aio.Server) -> list[str]:
    handler = grpc.unary_unary_rpc_method_handler(_whoami)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Call": handler})])
    return [SERVICE]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("pki"), name="Filestore Test CA")


async def _serve(tls: TlsSettings) -> ServerHandle:
    handle = create_server(
        listen="127.0.0.1:0",
        domain="test.filestore.v1",
        verifier=TokenVerifier(SECRET),
        register=_register,
        tls=tls,
    )
    await handle.start()
    return handle


async def _call(port: int, tls: TlsSettings | None) -> bytes:
    token = mint_token(SECRET, subject="ann", tenant="acme")
    async with service_channel(f"127.0.0.1:{port}", token=lambda: token, tls=tls) as channel:
        with translated_errors():
            answer: bytes = await channel.unary_unary(f"/{SERVICE}/Call")(b"", timeout=5)
            return answer


@pytest.fixture
async def tls_server(authority: CertificateAuthority) -> AsyncIterator[ServerHandle]:
    server = authority.server_certificate("server", hosts=["127.0.0.1", "localhost"])
    handle = await _serve(TlsSettings(cert_file=str(server.cert_file), key_file=str(server.key_file)))
    yield handle
    await handle.stop(0)


@pytest.fixture
async def mtls_server(authority: CertificateAuthority) -> AsyncIterator[ServerHandle]:
    server = authority.server_certificate("mserver", hosts=["127.0.0.1", "localhost"])
    handle = await _serve(
        TlsSettings(
            cert_file=str(server.cert_file),
            key_file=str(server.key_file),
            client_ca_file=str(authority.cert_file),
        )
    )
    yield handle
    await handle.stop(0)


async def test_tls_server_answers_clients_that_trust_its_ca(
    tls_server: ServerHandle, authority: CertificateAuthority
) -> None:
    assert await _call(tls_server.port, TlsSettings(ca_file=str(authority.cert_file))) == b"ann"
    with pytest.raises(FilestoreError) as plaintext:
        await _call(tls_server.port, None)
    assert plaintext.value.code is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    mtls_server: ServerHandle, authority: CertificateAuthority, tmp_path: Path
) -> None:
    client = authority.client_certificate("client")
    trusted = TlsSettings(
        ca_file=str(authority.cert_file),
        client_cert_file=str(client.cert_file),
        client_key_file=str(client.key_file),
    )
    assert await _call(mtls_server.port, trusted) == b"ann"
    with pytest.raises(FilestoreError) as anonymous:
        await _call(mtls_server.port, TlsSettings(ca_file=str(authority.cert_file)))
    assert anonymous.value.code is grpc.StatusCode.UNAVAILABLE
    stranger = CertificateAuthority.create(tmp_path, name="Other CA").client_certificate("intruder")
    with pytest.raises(FilestoreError) as foreign:
        await _call(
            mtls_server.port,
            TlsSettings(
                ca_file=str(authority.cert_file),
                client_cert_file=str(stranger.cert_file),
                client_key_file=str(stranger.key_file),
            ),
        )
    assert foreign.value.code is grpc.StatusCode.UNAVAILABLE


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "bob", "tenant": "acme", "exp": int(time.time()) + 600, **extra}


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_identity_provider_tokens_verify_with_its_public_key(algorithm: str) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else (ec.generate_private_key(ec.SECP256R1()))
    )
    verifier = TokenVerifier(
        SECRET, public_key_pem=_pem(key), issuer="https://idp.example", audience="filestore"
    )
    token = jwt.encode(_claims(iss="https://idp.example", aud="filestore"), key, algorithm=algorithm)
    assert verifier.verify(token).subject == "bob"
    for bad in (
        jwt.encode(_claims(iss="https://evil.example", aud="filestore"), key, algorithm=algorithm),
        jwt.encode(
            _claims(iss="https://idp.example", aud="filestore", roles=["service"]), key, algorithm=algorithm
        ),
        # Algorithm confusion: the public key used as an HMAC secret.
        jwt.encode(_claims(iss="https://idp.example", aud="filestore"), "x" * 64, algorithm="HS256"),
    ):
        with pytest.raises(Unauthenticated):
            verifier.verify(bad)


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", key
    server.shutdown()
    thread.join()


def test_identity_provider_tokens_verify_through_its_jwks(jwks_server: tuple[str, rsa.RSAPrivateKey]) -> None:
    url, key = jwks_server
    verifier = TokenVerifier(SECRET, jwks_url=url)
    token = jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(token).tenant == "acme"
    unknown = jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k2"})
    with pytest.raises(Unauthenticated):
        verifier.verify(unknown)


async def test_the_health_port_answers_plaintext_probes_of_a_mutual_tls_server_and_nothing_else(
    mtls_server: ServerHandle,
) -> None:
    # A kubelet's grpc probe speaks no TLS: it can only probe the health-only plaintext port.
    port = await mtls_server.serve_health("127.0.0.1:0")
    assert await asyncio.to_thread(healthcheck.check, f"127.0.0.1:{port}") is True
    assert await asyncio.to_thread(healthcheck.check, f"127.0.0.1:{mtls_server.port}") is False
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as service_call:
            await channel.unary_unary(f"/{SERVICE}/Call")(b"", timeout=5)
    assert service_call.value.code() is grpc.StatusCode.UNIMPLEMENTED
    # Draining: the probe hears NOT_SERVING (the pod leaves the endpoints) while RPCs finish.
    await mtls_server.health.enter_graceful_shutdown()
    assert await asyncio.to_thread(healthcheck.check, f"127.0.0.1:{port}") is False
