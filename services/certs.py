"""A private CA and the certificates it signs, for the services' mutual TLS (services/tls.py)
and MongoDB's.

`discovery secrets` uses it to make everything docker-compose.yml mounts; the tests use it
for their own CA. Keys are EC P-256, certificates are good for a year (the CA for five), and a
service certificate serves and calls (server and client auth) for the names it is given.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services import token_keys
from services.envconfig import ConfigError

# The subject's O of every certificate issued here (its OU and CN are the service's name).
ORGANIZATION = "Discovery"


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

    @classmethod
    def load(cls, cert: Path, key: Path) -> Authority:
        """The CA `write_ca` and `write_key` wrote, to issue more certificates from it."""
        authority = cls.__new__(cls)
        authority.cert = x509.load_pem_x509_certificate(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key}: not the EC key of a CA this module made")
        authority.key = private
        return authority

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
            .subject_name(
                # MongoDB names an X.509 user by the whole subject, and would take a client
                # whose O, OU and DC all equal its own certificate's for a replica set member:
                # each certificate has an OU of its own.
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
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


# What `discovery secrets` writes and docker-compose.yml mounts, by file name: the CA, then
# `<service>.crt` / `<service>.key` for each of SERVICES.
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVICES = ("engine", "pioneer", "gateway", "mongo")
# The compose `cluster` profile's services, each with a certificate of its own: an engine's
# names the engine that the others forward calls to, a replica set member's the member the
# others dial, and each engine logs in to MongoDB as its own certificate's subject.
CLUSTER_ENGINES = ("engine-1", "engine-2", "engine-3")
CLUSTER_MONGOS = ("mongo-1", "mongo-2", "mongo-3")
CLUSTER_SERVICES = (
    *CLUSTER_ENGINES,
    *("pioneer-1", "pioneer-2", "gateway-1", "gateway-2"),
    *CLUSTER_MONGOS,
)
# The name every cluster engine also answers to: pioneers and gateways dial
# dns:///engines:50051, a network alias that resolves to all of them.
ENGINES_ALIAS = "engines"
# A certificate and its key in one file, `<service>.pem`: mongod's --tlsCertificateKeyFile,
# and the engine's client certificate for MongoDB (pymongo's tlsCertificateKeyFile).
ONE_FILE_PEM = ("mongo", "engine", *CLUSTER_ENGINES, *CLUSTER_MONGOS)
# MongoDB's root user's password (the health check's login) and the key its replica set
# members authenticate each other with.
MONGO_ROOT_PASSWORD, MONGO_KEYFILE = "mongo-root-password", "mongo-keyfile"
# The token keys (services/token_keys.py), apart: tokens/engine.key is not engine.key.
TOKENS = "tokens"
# Besides its compose service name: health checks dial localhost.
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


def make_deployment_secrets(directory: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> list[Path]:
    """A private CA; a certificate per service (the compose cluster profile's too), for its
    name and `hosts`; the token keys; MongoDB's credentials; in `directory`, and the files
    written. A file already there is
    kept: a new CA would lock out every service still holding a certificate from the old one,
    a new key every token signed with the old one. A certificate that is missing is issued
    again from the CA (ca.key is needed then)."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ca_cert, ca_key = directory / CA_CERT, directory / CA_KEY
    authority: Authority | None = None
    new_ca = not ca_cert.exists()
    if new_ca and ca_key.exists():
        raise ConfigError(f"{ca_key} is there without {ca_cert}: bring it back")
    if new_ca:
        authority = Authority("discovery-ca")
        written += [authority.write_ca(ca_cert), authority.write_key(ca_key)]
    for service in (*SERVICES, *CLUSTER_SERVICES):
        cert, key = directory / f"{service}.crt", directory / f"{service}.key"
        pem = directory / f"{service}.pem"
        # A new CA issues every certificate again: the old ones would not chain to it.
        issue = new_ca or not (cert.exists() and key.exists())
        if issue:
            if authority is None:
                if not ca_key.exists():
                    raise ConfigError(
                        f"{cert.name} must be issued and {ca_key} is not there: bring the "
                        "CA's key back (or remove ca.crt too, to start a new CA)"
                    )
                authority = Authority.load(ca_cert, ca_key)
            alias = (ENGINES_ALIAS,) if service in CLUSTER_ENGINES else ()
            # dict.fromkeys: the names once each, in order.
            names = tuple(dict.fromkeys((service, *alias, *hosts)))
            made = authority.issue(directory, service, names)
            written += [made.cert, made.key]
        if service in ONE_FILE_PEM and (issue or not pem.exists()):
            _write_private(pem, cert.read_bytes() + key.read_bytes())
            written.append(pem)
    # mongod takes a key file of base64 characters, 6 to 1024 of them.
    mongo_secrets = {
        MONGO_ROOT_PASSWORD: secrets.token_urlsafe(32),
        MONGO_KEYFILE: base64.b64encode(secrets.token_bytes(756)).decode(),
    }
    for name, value in mongo_secrets.items():
        if _create_private(directory / name, value.encode()):
            written.append(directory / name)
    written += token_keys.make_signer_keys(directory / TOKENS)
    return written


def _create_private(path: Path, data: bytes) -> bool:
    """Writes `data`, owner-only, unless the file is there; whether it wrote."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return True
