"""The keys tokens are signed and verified with, and the files that hold them.

Every signer holds an Ed25519 private key of its own (`DISCOVERY_SIGNING_KEY_FILE`, PKCS#8
PEM, as `openssl genpkey -algorithm ed25519` writes it), and only that signer has it. Every
verifier reads the deployment's trusted keys (`DISCOVERY_TRUSTED_KEYS_FILE`): a JSON Web Key
Set (RFC 7517) of public keys, each with the roles it may sign for and, per role, the tenants
(`"discovery_grants": {"watcher": ["*"], "client": ["default"]}`; "*" is any tenant). A token
whose key may not sign its role for its tenant is refused, so a compromised gateway or pioneer
cannot mint an admin token: their keys sign only what those services need.

A key's id (`kid`) is its RFC 7638 thumbprint, computed, never chosen: a signer and its
verifiers cannot disagree on it. Keys are rotated by adding the new public key to the trusted
set, signing with the new private key, and dropping the old public key once its tokens have
expired (revoking their ids meanwhile if they must stop sooner).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.envconfig import ConfigError

SIGNING_KEY_FILE_ENV = "DISCOVERY_SIGNING_KEY_FILE"
TRUSTED_KEYS_FILE_ENV = "DISCOVERY_TRUSTED_KEYS_FILE"
GRANTS_MEMBER = "discovery_grants"
TRUSTED_KEYS_FILE = "trusted-keys.json"
ANY_TENANT = "*"
# What the tokens may name (services/auth.py holds the meaning of each role).
ROLE_NAMES = frozenset({"client", "admin", "runner", "watcher", "engine"})

# Who signs what in a deployment of the three services and an operator (`discovery token`).
# The engine signs its calls to HTTP runners and the watch tokens it hands out; the gateway
# the watch tokens it hands out and the reports of HTTP runners that send only their attempt
# token (that token binds the report to its step); pioneer its own runner token. Whoever
# operates the deployment holds the key that signs clients, admins and other runners.
OPERATOR, ENGINE_SIGNER, GATEWAY_SIGNER, PIONEER_SIGNER = "operator", "engine", "gateway", "pioneer"
SIGNER_GRANTS: dict[str, dict[str, list[str]]] = {
    OPERATOR: {role: [ANY_TENANT] for role in ("admin", "client", "runner", "watcher")},
    ENGINE_SIGNER: {"engine": [ANY_TENANT], "watcher": [ANY_TENANT]},
    GATEWAY_SIGNER: {"watcher": [ANY_TENANT], "runner": [ANY_TENANT]},
    PIONEER_SIGNER: {"runner": [ANY_TENANT]},
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def thumbprint(key: Ed25519PublicKey) -> str:
    """RFC 7638: the SHA-256 of the key's required members, in order, without spaces."""
    members = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(key))},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(members.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    # Keys compare by their kid: the thumbprint names the key pair.
    private: Ed25519PrivateKey = field(repr=False, compare=False)
    kid: str

    @classmethod
    def of(cls, private: Ed25519PrivateKey) -> SigningKey:
        return cls(private, thumbprint(private.public_key()))


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    public: Ed25519PublicKey = field(repr=False, compare=False)
    # role -> the tenants it may sign that role for ("*": any)
    grants: Mapping[str, frozenset[str]]

    def may_sign(self, role: str, tenant: str) -> bool:
        tenants = self.grants.get(role)
        return tenants is not None and (ANY_TENANT in tenants or tenant in tenants)


@dataclass(frozen=True)
class AuthKeys:
    """What one service holds: the keys it trusts, and its own signing key."""

    trusted: tuple[TrustedKey, ...]
    signing: SigningKey | None = None

    def may_sign(self, role: str, tenant: str) -> bool:
        """Whether the tokens this service signs for `role` of `tenant` will be accepted."""
        if self.signing is None:
            return False
        mine = next((key for key in self.trusted if key.kid == self.signing.kid), None)
        return mine is not None and mine.may_sign(role, tenant)


def load_signing_key(path: Path, where: str = SIGNING_KEY_FILE_ENV) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}={str(path)!r}: {exc.strerror}") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}={str(path)!r}: not an unencrypted PEM key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"{where}={str(path)!r}: an Ed25519 key is required")
    return SigningKey.of(private)


def parse_trusted_keys(text: str, where: str = TRUSTED_KEYS_FILE_ENV) -> tuple[TrustedKey, ...]:
    """The keys of a JWK Set with grants; any member that is not right is named."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON ({exc})") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f'{where}: a JWK Set is required: {{"keys": [...]}}, not empty')
    return tuple(_trusted_key(entry, f"{where}: keys[{i}]") for i, entry in enumerate(keys))


def _trusted_key(entry: Any, where: str) -> TrustedKey:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a JSON object is required")
    if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
        raise ConfigError(f'{where}: an Ed25519 key is required ("kty": "OKP", "crv": "Ed25519")')
    try:
        raw = base64.urlsafe_b64decode(str(entry.get("x", "")) + "==")
        public = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ConfigError(f'{where}: "x" is not a base64url Ed25519 public key') from None
    kid = thumbprint(public)
    if "kid" in entry and entry["kid"] != kid:
        raise ConfigError(f'{where}: "kid" must be the key\'s RFC 7638 thumbprint, {kid}')
    grants = entry.get(GRANTS_MEMBER)
    if not isinstance(grants, dict) or not grants:
        raise ConfigError(
            f'{where}: "{GRANTS_MEMBER}" must name the roles the key may sign, e.g. '
            '{"watcher": ["*"]}'
        )
    checked: dict[str, frozenset[str]] = {}
    for role, tenants in grants.items():
        if role not in ROLE_NAMES:
            raise ConfigError(f"{where}: {GRANTS_MEMBER}: unknown role {role!r}")
        if (
            not isinstance(tenants, list)
            or not tenants
            or not all(isinstance(t, str) and t for t in tenants)
        ):
            raise ConfigError(f'{where}: {GRANTS_MEMBER}.{role}: a list of tenants, or ["*"]')
        checked[role] = frozenset(tenants)
    return TrustedKey(kid, public, checked)


def load_trusted_keys(path: Path, where: str = TRUSTED_KEYS_FILE_ENV) -> tuple[TrustedKey, ...]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{where}={str(path)!r}: {exc.strerror}") from None
    return parse_trusted_keys(text, f"{where}={str(path)!r}")


def keys_from_env(env: Mapping[str, str]) -> AuthKeys:
    """A service's keys; a service without them refuses to start (each one signs tokens)."""
    trusted_path = env.get(TRUSTED_KEYS_FILE_ENV, "").strip()
    if not trusted_path:
        raise ConfigError(
            f"{TRUSTED_KEYS_FILE_ENV} is required: every call is authenticated with tokens "
            "verified against those keys (`discovery secrets DIR` makes a deployment's keys)"
        )
    signing_path = env.get(SIGNING_KEY_FILE_ENV, "").strip()
    if not signing_path:
        raise ConfigError(f"{SIGNING_KEY_FILE_ENV} is required: this service signs tokens")
    return AuthKeys(load_trusted_keys(Path(trusted_path)), load_signing_key(Path(signing_path)))


def jwk(public: Ed25519PublicKey, grants: Mapping[str, list[str]]) -> dict[str, Any]:
    """A trusted-keys entry for `public`."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(_raw_public(public)),
        "kid": thumbprint(public),
        "use": "sig",
        "alg": "EdDSA",
        GRANTS_MEMBER: {role: list(tenants) for role, tenants in grants.items()},
    }


def create_signing_key(path: Path) -> bool:
    """A fresh Ed25519 key readable by its owner only, unless one is already there; whether
    it wrote one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return True


def make_signer_keys(
    directory: Path,
    grants: Mapping[str, Mapping[str, list[str]]] | None = None,
    *,
    replace_trusted: bool = False,
) -> list[Path]:
    """One signing key per signer (`<name>.key`, existing ones kept) and the trusted-keys
    file that grants each what it may sign (`trusted-keys.json`: kept if there, as an
    operator may have added keys to it, unless `replace_trusted`); the files written."""
    grants = SIGNER_GRANTS if grants is None else grants
    written = []
    entries = []
    for name, granted in grants.items():
        path = directory / f"{name}.key"
        if create_signing_key(path):
            written.append(path)
        entries.append(jwk(load_signing_key(path).private.public_key(), granted))
    trusted = directory / TRUSTED_KEYS_FILE
    text = json.dumps({"keys": entries}, indent=2) + "\n"
    if not trusted.exists() or (replace_trusted and trusted.read_text() != text):
        trusted.write_text(text)
        written.append(trusted)
    return written
