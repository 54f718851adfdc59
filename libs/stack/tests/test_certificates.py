"""The local CA: kept across restarts, private files, certificates issued again only when needed."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from filestore.stack.certificates import CertificateAuthority
from filestore.stack.tls import TLS_CLIENTS, TLS_SERVERS, ensure_stack_tls, tls_env_for, user_tls_settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


def test_the_ca_is_made_once_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    first = ensure_stack_tls(directory, hosts=["10.1.2.3", "files.internal"])
    ca_pem = first.ca_file.read_bytes()
    server_pem = first.server("metadata").cert_file.read_bytes()
    again = ensure_stack_tls(directory, hosts=["10.1.2.3", "files.internal"])
    assert again.ca_file.read_bytes() == ca_pem
    assert again.server("metadata").cert_file.read_bytes() == server_pem
    assert set(first.servers) == set(TLS_SERVERS)
    assert set(first.clients) == set(TLS_CLIENTS)
    assert _mode(directory) == 0o700
    assert _mode(directory / "ca.key") == 0o600
    issued = (*first.servers.values(), *first.clients.values())
    assert all(_mode(certificate.key_file) == 0o600 for certificate in issued)
    assert _sans(first.server("nats").cert_file) == {"10.1.2.3", "files.internal", "127.0.0.1", "localhost"}
    # stack.json names the user's files without the issued objects at hand.
    user = user_tls_settings(directory)
    assert user.client_cert_file == str(first.client("user").cert_file)
    assert user.ca_file == str(first.ca_file)


def test_certificates_are_issued_again_when_missing_short_lived_or_for_other_hosts(tmp_path: Path) -> None:
    authority = CertificateAuthority.load_or_create(tmp_path)
    issued = authority.server_certificate("server-x", hosts=["127.0.0.1"])
    original = issued.cert_file.read_bytes()
    assert authority.server_certificate("server-x", hosts=["127.0.0.1"]).cert_file.read_bytes() == original

    authority.server_certificate("server-x", hosts=["127.0.0.1", "::1"])
    assert _sans(issued.cert_file) == {"127.0.0.1", str(ipaddress.ip_address("::1"))}

    issued.cert_file.unlink()
    authority.server_certificate("server-x", hosts=["127.0.0.1"], validity=timedelta(days=2))
    short = issued.cert_file.read_bytes()
    # Two days left is inside the renewal window: the next start issues a full-length one.
    assert authority.server_certificate("server-x", hosts=["127.0.0.1"]).cert_file.read_bytes() != short

    issued.key_file.unlink()
    renewed = authority.server_certificate("server-x", hosts=["127.0.0.1"])
    assert renewed.key_file.is_file()

    # A new CA (the old one's files lost): what the old one signed no longer verifies, so it is replaced.
    (tmp_path / "ca.key").unlink()
    replacement = CertificateAuthority.load_or_create(tmp_path)
    before = issued.cert_file.read_bytes()
    replacement.server_certificate("server-x", hosts=["127.0.0.1"])
    after = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
    assert issued.cert_file.read_bytes() != before
    after.verify_directly_issued_by(replacement.certificate)


def test_a_client_certificate_serves_python_tls_and_services_get_mutual_tls(tmp_path: Path) -> None:
    tls = ensure_stack_tls(tmp_path / "tls", hosts=["127.0.0.1"])
    # Loads as a client chain, and the CA as trust: what NATS and HTTPS clients do with them.
    context = tls.client_settings().client_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    upload = tls_env_for("upload", tls)
    assert upload["FILESTORE_TLS_CLIENT_CA_FILE"] == str(tls.ca_file)
    assert upload["FILESTORE_NATS_CLIENT_CERT_FILE"] == str(tls.client("upload").cert_file)
    assert upload["FILESTORE_S3_CA_FILE"] == str(tls.ca_file)
    assert "FILESTORE_NATS_CA_FILE" not in tls_env_for("metadata", tls)
    edge = tls_env_for("edge", tls)
    assert "FILESTORE_TLS_CLIENT_CA_FILE" not in edge  # browsers present no certificate
    assert edge["FILESTORE_TLS_CERT_FILE"] == str(tls.server("edge").cert_file)
