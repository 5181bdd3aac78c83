"""A private CA and the certificates it signs, for the services' mutual TLS (services/tls.py).

`discovery secrets DIR` uses it to make everything docker-compose.yml mounts; the tests use it
for their own CA. Keys are EC P-256, certificates are good for a year (the CA for five), and a
service certificate serves and calls (server and client auth) for the names it is given.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.auth import create_secret_file


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Authority:
    def __init__(self, name: str, *, days: int = 5 * 365) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .sign(self.key, hashes.SHA256())
        )

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def write_key(self, path: Path) -> Path:
        """The CA's private key, to issue more certificates later; owner-only."""
        _write_private(
            path,
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return path

    def issue(
        self, directory: Path, name: str, hosts: tuple[str, ...], *, days: int = 365
    ) -> Issued:
        """A certificate for `hosts` (DNS names or IPs), good to serve and to call with; its
        key is readable by its owner only."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(directory / f"{name}.crt", directory / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(
            issued.key,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return issued


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


# What docker-compose.yml mounts, by file name.
AUTH_KEY, CA_CERT, CA_KEY, SERVICE = "auth.key", "ca.crt", "ca.key", "service"


def make_deployment_secrets(directory: Path, hosts: tuple[str, ...]) -> list[Path]:
    """The token secret, a private CA and one service certificate for `hosts`, in
    `directory`; the files written. An existing CA is kept: issuing again would lock out
    every service still holding a certificate from it."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if not (directory / AUTH_KEY).exists():
        create_secret_file(directory / AUTH_KEY)
        written.append(directory / AUTH_KEY)
    if not (directory / CA_CERT).exists():
        ca = Authority("discovery-ca")
        written.append(ca.write_ca(directory / CA_CERT))
        written.append(ca.write_key(directory / CA_KEY))
        issued = ca.issue(directory, SERVICE, hosts)
        written += [issued.cert, issued.key]
    return written
