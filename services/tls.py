"""Mutual TLS between the services, when a deployment gives them certificates.

One convention for every service: `DISCOVERY_TLS_CA` is the private CA that signs every
service's certificate, and `DISCOVERY_TLS_CERT` / `DISCOVERY_TLS_KEY` are this service's own,
used both to serve (engine, pioneer) and to call (gateway, pioneer, engine, CLI). With them,
every gRPC server asks for a client certificate signed by the CA, and every client checks the
server's certificate against the CA and the name it dialled (SAN). Without them, plaintext:
the one-machine default of `make run`, where tokens still authenticate every call.

The gateway's public HTTPS edge is separate (GATEWAY_TLS_CERT / GATEWAY_TLS_KEY): browsers
trust a public CA, not the private one.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from discovery_client.channel import Tls
from discovery_client.errors import ConfigError
from discovery_client.settings import CA_ENV, CERT_ENV, KEY_ENV, tls_from_env

__all__ = ["CA_ENV", "CERT_ENV", "KEY_ENV", "Tls", "add_port", "https_context", "tls_from_env"]


def server_credentials(tls: Tls) -> grpc.ServerCredentials:
    """Serves with the service's certificate and asks every caller for one the CA signed."""
    return grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
    )


def add_port(server: grpc.aio.Server, address: str, tls: Tls | None) -> int:
    port: int
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls))
    return port


def https_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The gateway's public edge: TLS 1.2 at least, the certificate it is given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"GATEWAY_TLS_CERT / GATEWAY_TLS_KEY: {exc}") from None
    return context
