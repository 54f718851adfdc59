"""A local certificate authority: its key and certificate in one directory, server and client
certificates issued by it and kept beside them.

The stack's CA lives in ``$FILESTORE_HOME/tls/`` (0700; keys 0600): created once, then reused at every
start, so a client that trusts ``ca.pem`` keeps trusting the stack across restarts. Certificates are
issued again only when they are missing, unreadable, not signed by this CA, about to expire, or do
not name every host asked for: :meth:`CertificateAuthority.server_certificate` and
:meth:`CertificateAuthority.client_certificate` are cheap to call at every start.

Keys are ECDSA P-256 (every TLS stack in the picture, Go's, BoringSSL's, OpenSSL's, takes them). The
extensions are the ones strict verifiers insist on: Python 3.13's ``VERIFY_X509_STRICT`` wants the
subject and authority key identifiers, Go wants the extended key usage that matches the role (a
client certificate without ``clientAuth`` is refused by nats-server's ``verify``).

The tests' throw-away CAs are this one too (``CertificateAuthority.create`` in a temporary directory):
one mechanism for making certificates.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Self

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from filestore.stack.credentials import write_atomically
from filestore.stack.errors import StackConfigError

__all__ = ["CA_CERT_FILE", "CA_KEY_FILE", "CertificateAuthority", "IssuedCertificate"]

CA_CERT_FILE: Final = "ca.pem"
CA_KEY_FILE: Final = "ca.key"
DEFAULT_CA_NAME: Final = "Filestore Local CA"
#: A local CA outlives many restarts; its certificates are renewed long before they expire.
CA_VALIDITY: Final = timedelta(days=3650)
LEAF_VALIDITY: Final = timedelta(days=365)
#: Renew what expires sooner than this: a stack left running over a weekend must not see its
#: certificates lapse, and a leaf renewed at the next start costs milliseconds.
RENEW_WITHIN: Final = timedelta(days=30)
# Clocks of processes on one machine agree, but a certificate "valid from now" can still be
# refused by a verifier a few milliseconds behind; backdate a little.
_BACKDATE: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate (PEM) and its private key (PEM, 0600), as files."""

    cert_file: Path
    key_file: Path


class CertificateAuthority:
    """A CA kept in ``directory`` as ``ca.pem`` and ``ca.key``. Build one with :meth:`load_or_create`
    (the stack) or :meth:`create` (a fresh one, for tests)."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.directory = directory
        self._key = key
        self._cert = cert

    @property
    def cert_file(self) -> Path:
        """What clients and servers verify peers against."""
        return self.directory / CA_CERT_FILE

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @classmethod
    def create(
        cls, directory: Path, *, name: str = DEFAULT_CA_NAME, validity: timedelta = CA_VALIDITY
    ) -> Self:
        """A new CA in ``directory``, replacing whatever CA was there."""
        _private_directory(directory)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        # The key first: a certificate without its key would be taken for a CA that cannot sign.
        _write_key(key, directory / CA_KEY_FILE)
        _write_public(directory / CA_CERT_FILE, cert)
        return cls(directory, key, cert)

    @classmethod
    def load_or_create(cls, directory: Path, *, name: str = DEFAULT_CA_NAME) -> Self:
        """The CA kept in ``directory``; a new one when there is none, or when it is unreadable or
        expires within :data:`RENEW_WITHIN` (its certificates are then issued again, since they no
        longer verify against it)."""
        _private_directory(directory)
        try:
            key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        except (OSError, ValueError):
            return cls.create(directory, name=name)
        if (
            not isinstance(key, ec.EllipticCurvePrivateKey)
            or key.public_key().public_numbers() != _ec_public_numbers(cert)
            or _expires_soon(cert)
        ):
            return cls.create(directory, name=name)
        return cls(directory, key, cert)

    # ------------------------------------------------------------------------------ issuing

    def server_certificate(
        self,
        name: str,
        *,
        hosts: Iterable[str],
        validity: timedelta = LEAF_VALIDITY,
        also_client: bool = False,
    ) -> IssuedCertificate:
        """``name.pem``/``name.key``: a server certificate whose subject alternative names are
        ``hosts`` (IP addresses and DNS names), reused while it is still good for all of them.
        ``also_client`` makes it good for the client side too, for servers that connect to each other
        with one certificate and check each other's (NATS cluster routes)."""
        wanted = _alternative_names(hosts)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
        if also_client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        return self._certificate(name, usages, wanted, validity)

    def client_certificate(self, name: str, *, validity: timedelta = LEAF_VALIDITY) -> IssuedCertificate:
        """``name.pem``/``name.key``: a client certificate for mutual TLS, whose common name is
        ``name`` (the caller's identity in a server's logs), reused while it is still good."""
        return self._certificate(name, [ExtendedKeyUsageOID.CLIENT_AUTH], [], validity)

    def _certificate(
        self,
        name: str,
        usages: list[x509.ObjectIdentifier],
        names: list[x509.GeneralName],
        validity: timedelta,
    ) -> IssuedCertificate:
        if not name or "/" in name or name.startswith(".") or name in ("ca",):
            raise StackConfigError(f"{name!r} is not a certificate name")
        issued = IssuedCertificate(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        if self._still_good(issued, usages, names):
            return issued
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + validity, self._cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        _write_key(key, issued.key_file)
        _write_public(issued.cert_file, cert)
        return issued

    def _still_good(
        self, issued: IssuedCertificate, usages: list[x509.ObjectIdentifier], names: list[x509.GeneralName]
    ) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
            key = serialization.load_pem_private_key(issued.key_file.read_bytes(), password=None)
            cert.verify_directly_issued_by(self._cert)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return False
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key().public_numbers() != (
            _ec_public_numbers(cert)
        ):
            return False
        try:
            present_usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            present: list[x509.GeneralName] = (
                list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
                if names
                else []
            )
        except x509.ExtensionNotFound:
            return False
        return (
            all(usage in present_usages for usage in usages)
            and all(name in present for name in names)
            and not _expires_soon(cert)
        )


def _alternative_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip().strip("[]") for h in hosts if h.strip()):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if not names:
        raise StackConfigError("a server certificate needs at least one host name or address")
    return names


def _ec_public_numbers(cert: x509.Certificate) -> ec.EllipticCurvePublicNumbers | None:
    public = cert.public_key()
    return public.public_numbers() if isinstance(public, ec.EllipticCurvePublicKey) else None


def _expires_soon(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - datetime.now(UTC) < RENEW_WITHIN


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode does not apply to a directory that already existed (or is masked by the umask).
    os.chmod(directory, 0o700)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomically(path, pem, mode=0o600)


def _write_public(path: Path, cert: x509.Certificate) -> None:
    write_atomically(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
