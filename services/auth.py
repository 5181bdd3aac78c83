"""Who is calling and what they may do: signed tokens, shared by every service.

A token is a JWT signed with HS256 under a secret every service of one deployment shares
(`DISCOVERY_AUTH_SECRET_FILE`, one secret per line: the first signs, all verify, so a secret
is rotated by prepending the new one and dropping the old one once its tokens have expired).
The algorithm is fixed here, never read from the token; `exp`, `iat`, `iss`, `aud`, `sub`,
`role` and `tenant` are required.

Roles:
    client   starts, reads, watches, cancels and advances its tenant's executions; reads
             its tenant's workflow definitions
    admin    what a client may, plus creating workflow definitions
    runner   reports step progress and completion (the attempt token binds it to one step)
    watcher  reads and watches one execution (`execution_id` claim): the short-lived token
             `execute-async` hands to a browser
    engine   the engine calling pioneer

Nothing here knows gRPC or HTTP: each service maps `Unauthenticated` to 401/UNAUTHENTICATED
and `PermissionDenied` to 403/PERMISSION_DENIED at its own edge.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from services.envconfig import ConfigError

CLIENT = "client"
ADMIN = "admin"
RUNNER = "runner"
WATCHER = "watcher"
ENGINE = "engine"
ROLES = frozenset({CLIENT, ADMIN, RUNNER, WATCHER, ENGINE})

DEFAULT_TENANT = "default"
ISSUER = "discovery"
AUDIENCE = "discovery"
ALGORITHM = "HS256"
# RFC 7518 §3.2: an HS256 key is at least as long as the hash.
MIN_SECRET_BYTES = 32
LEEWAY_SECONDS = 30
# Verified tokens remembered by one authority (services/auth.py, TokenAuthority.verify).
MAX_VERIFIED_TOKENS = 10_000
# The watcher token a browser holds: short, as OWASP asks of browser tokens.
WATCH_TOKEN_SECONDS = 15 * 60
# What the engine and pioneer sign for each other's calls: renewed long before it ends.
SERVICE_TOKEN_SECONDS = 60 * 60

SECRET_ENV = "DISCOVERY_AUTH_SECRET"
SECRET_FILE_ENV = "DISCOVERY_AUTH_SECRET_FILE"
TOKEN_ENV = "DISCOVERY_TOKEN"


class AuthError(Exception):
    reason = "AUTH_ERROR"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class Unauthenticated(AuthError):
    """No credentials, or credentials that prove nothing (expired, forged, malformed)."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(AuthError):
    """A valid principal whose role may not make this call."""

    reason = "PERMISSION_DENIED"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    tenant: str
    expires_at: float
    # Set for watcher tokens only: the one execution they may see.
    execution_id: str | None = None

    def require(self, roles: Iterable[str], what: str) -> None:
        if self.role not in roles:
            raise PermissionDenied(f"role {self.role!r} may not {what}")

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


def _key_id(secret: bytes) -> str:
    # Names the secret in the token header without revealing anything about it.
    return hashlib.sha256(b"discovery-kid:" + secret).hexdigest()[:16]


class TokenAuthority:
    """Mints and verifies tokens under one deployment's secrets."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one secret")
        for key in keys:
            if len(key) < MIN_SECRET_BYTES:
                raise ValueError(f"a secret must be at least {MIN_SECRET_BYTES} bytes")
        self._signing = keys[0]
        self._keys = {_key_id(key): key for key in keys}
        # Tokens already verified: a runner or a client sends the same one on every call,
        # and checking it again (JSON, base64, HMAC) was a fair share of a report's cost.
        self._verified: dict[str, Principal] = {}

    def mint(
        self,
        *,
        subject: str,
        role: str,
        tenant: str,
        ttl_seconds: float,
        execution_id: str | None = None,
        now: float | None = None,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if (role == WATCHER) != (execution_id is not None):
            raise ValueError("a watcher token names one execution, and only a watcher token")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "role": role,
            "tenant": tenant,
            "iat": issued,
            "exp": issued + int(ttl_seconds),
        }
        if execution_id is not None:
            claims["execution_id"] = execution_id
        return jwt.encode(
            claims, self._signing, algorithm=ALGORITHM, headers={"kid": _key_id(self._signing)}
        )

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known.expires_at + LEEWAY_SECONDS:
                return known
            del self._verified[token]
        caller = self._verify(token)
        if len(self._verified) >= MAX_VERIFIED_TOKENS:
            self._verified.clear()  # a bound, refilled by the tokens in use
        self._verified[token] = caller
        return caller

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(str(header.get("kid", "")))
            if key is None:
                raise Unauthenticated("the token is signed with an unknown key", "BAD_TOKEN")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", "TOKEN_EXPIRED") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}", "BAD_TOKEN") from None
        role, tenant = claims.get("role"), claims.get("tenant")
        execution_id = claims.get("execution_id")
        if role not in ROLES or not isinstance(tenant, str) or not tenant:
            raise Unauthenticated("the token has no valid role or tenant", "BAD_TOKEN")
        if (role == WATCHER) != isinstance(execution_id, str):
            raise Unauthenticated("the token's execution scope is not valid", "BAD_TOKEN")
        return Principal(
            subject=str(claims["sub"]),
            role=str(role),
            tenant=tenant,
            expires_at=float(claims["exp"]),
            execution_id=execution_id,
        )

    def verify_bearer(self, authorization: str | None) -> Principal:
        """`Authorization: Bearer <token>` (HTTP header or gRPC metadata)."""
        if not authorization:
            raise Unauthenticated(
                "credentials required: send 'authorization: Bearer <token>'", "NO_CREDENTIALS"
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization is not 'Bearer <token>'", "BAD_TOKEN")
        return self.verify(token.strip())


class ServiceToken:
    """A token a service signs for its own calls and renews long before it runs out."""

    def __init__(
        self,
        authority: TokenAuthority,
        *,
        subject: str,
        role: str,
        tenant: str = DEFAULT_TENANT,
        execution_id: str | None = None,
        ttl_seconds: float = SERVICE_TOKEN_SECONDS,
    ) -> None:
        self._authority = authority
        self._subject, self._role, self._tenant = subject, role, tenant
        self._execution_id = execution_id
        self._ttl = ttl_seconds
        self._token = ""
        self._renew_at = 0.0

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token()}"),)

    def token(self) -> str:
        """The current token, minted again once half its life has gone."""
        now = time.time()
        if now >= self._renew_at:
            self._token = self._authority.mint(
                subject=self._subject,
                role=self._role,
                tenant=self._tenant,
                ttl_seconds=self._ttl,
                execution_id=self._execution_id,
                now=now,
            )
            self._renew_at = now + self._ttl / 2
        return self._token


def parse_secrets(text: str, where: str) -> tuple[bytes, ...]:
    keys = tuple(line.strip().encode() for line in text.splitlines() if line.strip())
    if not keys:
        raise ConfigError(f"{where}: no secret in it")
    for key in keys:
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigError(f"{where}: each secret must be at least {MIN_SECRET_BYTES} bytes")
    return keys


def keys_from_env(env: Mapping[str, str]) -> tuple[bytes, ...]:
    """The deployment's secrets; a service without one refuses to start."""
    path = env.get(SECRET_FILE_ENV, "").strip()
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{SECRET_FILE_ENV}={path!r}: {exc.strerror}") from None
        return parse_secrets(text, SECRET_FILE_ENV)
    value = env.get(SECRET_ENV, "")
    if value.strip():
        return parse_secrets(value, SECRET_ENV)
    raise ConfigError(
        f"{SECRET_FILE_ENV} (or {SECRET_ENV}) is required: every call is authenticated "
        "with tokens signed under it"
    )


def create_secret_file(path: Path) -> None:
    """A fresh secret readable by its owner only, unless one is already there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
