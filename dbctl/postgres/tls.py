"""One CA per stack and the server certificates it signs: ECDSA P-256, SAN 127.0.0.1 and localhost.

Every client we hand a URL to verifies the server (`sslmode=verify-full&sslrootcert=<the CA file>`):
libpq, psycopg, pgbench, node-postgres (which treats any sslmode but disable/no-verify as verify-full) and
Prisma's driver adapter. A self-signed leaf would do for libpq but is not a CA, so one CA signs both the
PostgreSQL and the PgBouncer certificate, and PgBouncer verifies PostgreSQL against the same CA.

API
---
- ``CertificateAuthority(directory)``: ``ca.crt`` (0644) and ``ca.key`` (0600, owned by whoever runs dbctl;
  never copied to a server's directory). ``ensure() -> bool`` makes them when missing (True) and refuses a
  half-present pair. ``issue(cert_file, key_file, owner)`` writes a server key (0600, from the first byte)
  and a certificate signed by the CA; ``signed(cert_file)`` tells whether a certificate is this CA's, names
  both hosts and is valid for at least ``RENEW_BEFORE``.
- ``write_file(path, data, mode, owner)``: atomic, with ``mode`` from the first byte, optionally chowned.

ECDSA P-256 keeps handshakes cheap for serverless clients that connect per request (issue 10 §2).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dbctl.core.errors import DbctlError

CA_VALID = datetime.timedelta(days=3650)
# 825 days: the longest lifetime Apple's clients accept for a TLS server certificate; `up` renews earlier.
SERVER_VALID = datetime.timedelta(days=825)
RENEW_BEFORE = datetime.timedelta(days=30)
SERVER_DNS_NAMES = ("localhost",)
SERVER_IPS = (ipaddress.ip_address("127.0.0.1"),)

Owner = tuple[int, int] | None


class TlsError(DbctlError, RuntimeError):
    """The CA or a certificate is unusable. The message says which file and what to do."""


def write_file(path: Path, data: bytes, mode: int, owner: Owner = None) -> None:
    """Write data to path atomically and durably, with mode from the first byte (never briefly
    world-readable): the data is fsynced before the rename and the directory after it, so a crash leaves
    the old file or the new one, whole (some of these files, .local/credentials.json, are the only copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """fsync a directory: a file created or renamed in it then survives a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spike-land-db"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class CertificateAuthority:
    directory: Path

    @property
    def cert_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key_file(self) -> Path:
        return self.directory / "ca.key"

    def exists(self) -> bool:
        return self.cert_file.is_file() and self.key_file.is_file()

    def ensure(self, common_name: str = "spike-land-db local CA") -> bool:
        """Make the CA when it is missing; True when it was made now."""
        if self.exists():
            return False
        if self.cert_file.exists() or self.key_file.exists():
            raise TlsError(
                f"{self.directory} holds only half of a CA (ca.crt and ca.key go together); remove the "
                "directory to make a new CA (every certificate it signed is then renewed)"
            )
        key = _new_key()
        name = _name(common_name)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CA_VALID)
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
        self.directory.mkdir(parents=True, exist_ok=True)
        write_file(self.key_file, _key_pem(key), 0o600)
        write_file(self.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return True

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise TlsError(
                f"the CA in {self.directory} is unreadable ({type(e).__name__}); remove the directory to "
                "make a new one"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{self.key_file} is not an EC key; remove {self.directory} to make a new CA")
        return cert, key

    def issue(
        self, cert_file: Path, key_file: Path, owner: Owner = None, common_name: str = "localhost"
    ) -> None:
        """A new server key and certificate (SAN 127.0.0.1 + localhost) signed by this CA."""
        ca_cert, ca_key = self._load()
        key = _new_key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + SERVER_VALID, ca_cert.not_valid_after_utc))
            .add_extension(
                x509.SubjectAlternativeName(
                    [*(x509.DNSName(n) for n in SERVER_DNS_NAMES), *(x509.IPAddress(ip) for ip in SERVER_IPS)]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        write_file(key_file, _key_pem(key), 0o600, owner)
        write_file(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644, owner)

    def signed(self, cert_file: Path) -> bool:
        """True when cert_file is this CA's, names 127.0.0.1 and localhost, and is not about to expire."""
        ca_cert, _ = self._load()
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            cert.verify_directly_issued_by(ca_cert)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            return False
        names_ok = set(SERVER_DNS_NAMES) <= set(sans.get_values_for_type(x509.DNSName)) and set(
            SERVER_IPS
        ) <= set(sans.get_values_for_type(x509.IPAddress))
        return names_ok and cert.not_valid_after_utc - _now() > RENEW_BEFORE
