"""Who is calling and what they may do: signed tokens, shared by every service.

A token is a JWT signed with EdDSA (Ed25519) by a key that only its signer holds; every
service verifies it with the deployment's trusted public keys, each of which may sign only
some roles for some tenants (services/token_keys.py). The algorithm is fixed here, never read
from the token; `exp`, `iat`, `iss`, `aud`, `sub`, `jti`, `role` and `tenant` are required.
A token id (`jti`) can be revoked before the token expires (`revoke`, fed by the engine's
revoked-tokens collection).

Roles:
    client   starts, reads, watches, cancels and advances its tenant's executions; reads
             its tenant's workflow definitions
    admin    what a client may, plus creating workflow definitions and revoking tokens
    runner   takes and reports steps of its tenant's executions (tenant "*": any tenant's);
             the attempt token binds each report to one step
    watcher  reads and watches one execution (`execution_id` claim): the short-lived token
             `execute-async` hands to a browser
    engine   the engine calling a runner it pushes steps to

Nothing here knows gRPC or HTTP: each service maps `Unauthenticated` to 401/UNAUTHENTICATED
and `PermissionDenied` to 403/PERMISSION_DENIED at its own edge.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from services.token_keys import ANY_TENANT as ANY_TENANT
from services.token_keys import ROLE_NAMES, AuthKeys, TrustedKey

CLIENT = "client"
ADMIN = "admin"
RUNNER = "runner"
WATCHER = "watcher"
ENGINE = "engine"
ROLES = ROLE_NAMES  # services/token_keys.py checks grants against the same names

DEFAULT_TENANT = "default"
ISSUER = "discovery"
AUDIENCE = "discovery"
ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 30
# Verified tokens remembered by one authority (services/auth.py, TokenAuthority.verify).
MAX_VERIFIED_TOKENS = 10_000
# The watcher token a browser holds: short, as OWASP asks of browser tokens.
WATCH_TOKEN_SECONDS = 15 * 60
# The longest a token may live: a revocation of its id alone is kept this long.
MAX_TOKEN_SECONDS = 366 * 24 * 3600
# What the engine and pioneer sign for each other's calls: renewed long before it ends.
SERVICE_TOKEN_SECONDS = 60 * 60


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
    # The token's `jti`, what revoking it names ("" for principals no token stands for).
    token_id: str = ""

    def require(self, roles: Iterable[str], what: str) -> None:
        if self.role not in roles:
            raise PermissionDenied(f"role {self.role!r} may not {what}")

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    @property
    def runs_for(self) -> str | None:
        """A runner's tenant: whose steps it may take and report (None: any tenant's)."""
        return None if self.tenant == ANY_TENANT else self.tenant


class TokenAuthority:
    """Verifies tokens against the deployment's trusted keys, and mints them with this
    service's own key (if it has one)."""

    def __init__(self, keys: AuthKeys) -> None:
        self._signing = keys.signing
        self._trusted: dict[str, TrustedKey] = {key.kid: key for key in keys.trusted}
        self._revoked: frozenset[str] = frozenset()
        # Tokens already verified: a runner or a client sends the same one on every call,
        # and checking it again (JSON, base64, a signature) was a fair share of a report's cost.
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
        if self._signing is None:
            raise ValueError("this service has no signing key")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if (role == WATCHER) != (execution_id is not None):
            raise ValueError("a watcher token names one execution, and only a watcher token")
        if tenant == ANY_TENANT and role != RUNNER:
            raise ValueError("only a runner token may name every tenant")
        if ttl_seconds > MAX_TOKEN_SECONDS:
            raise ValueError(f"a token lives at most {MAX_TOKEN_SECONDS} s (366 days)")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "jti": uuid.uuid4().hex,
            "role": role,
            "tenant": tenant,
            "iat": issued,
            "exp": issued + int(ttl_seconds),
        }
        if execution_id is not None:
            claims["execution_id"] = execution_id
        return jwt.encode(
            claims, self._signing.private, algorithm=ALGORITHM, headers={"kid": self._signing.kid}
        )

    def revoke(self, token_ids: Iterable[str]) -> None:
        """The token ids refused from now on (the whole set: it replaces the last one)."""
        self._revoked = frozenset(token_ids)

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known.expires_at + LEEWAY_SECONDS:
                self._check_revoked(known)
                return known
            del self._verified[token]
        caller = self._verify(token)
        self._check_revoked(caller)
        if len(self._verified) >= MAX_VERIFIED_TOKENS:
            self._verified.clear()  # a bound, refilled by the tokens in use
        self._verified[token] = caller
        return caller

    def identify(self, token: str) -> Principal:
        """Who a token of this deployment names, expired or not (what revoking it needs)."""
        claims, _ = self._decode(token, verify_exp=False)
        return Principal(
            subject=str(claims["sub"]),
            role=str(claims.get("role", "")),
            tenant=str(claims.get("tenant", "")),
            expires_at=float(claims["exp"]),
            token_id=str(claims["jti"]),
        )

    def is_revoked(self, caller: Principal) -> bool:
        return bool(caller.token_id) and caller.token_id in self._revoked

    def _check_revoked(self, caller: Principal) -> None:
        if self.is_revoked(caller):
            raise Unauthenticated("the token has been revoked", "TOKEN_REVOKED")

    def _decode(self, token: str, *, verify_exp: bool = True) -> tuple[dict[str, Any], TrustedKey]:
        try:
            header = jwt.get_unverified_header(token)
            key = self._trusted.get(str(header.get("kid", "")))
            if key is None:
                raise Unauthenticated("the token is signed with an unknown key", "BAD_TOKEN")
            claims = jwt.decode(
                token,
                key.public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub", "jti"],
                    "verify_exp": verify_exp,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", "TOKEN_EXPIRED") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}", "BAD_TOKEN") from None
        return claims, key

    def _verify(self, token: str) -> Principal:
        claims, key = self._decode(token)
        role, tenant = claims.get("role"), claims.get("tenant")
        execution_id = claims.get("execution_id")
        if role not in ROLES or not isinstance(tenant, str) or not tenant:
            raise Unauthenticated("the token has no valid role or tenant", "BAD_TOKEN")
        if tenant == ANY_TENANT and role != RUNNER:
            raise Unauthenticated("only a runner token may name every tenant", "BAD_TOKEN")
        if (role == WATCHER) != isinstance(execution_id, str):
            raise Unauthenticated("the token's execution scope is not valid", "BAD_TOKEN")
        if not key.may_sign(role, tenant):
            # A service's key signs only what that service needs: its holder is not the
            # deployment's operator, whatever the token says.
            raise Unauthenticated(
                f"the token's key may not sign {role!r} tokens for tenant {tenant!r}",
                "KEY_NOT_ALLOWED",
            )
        return Principal(
            subject=str(claims["sub"]),
            role=str(role),
            tenant=tenant,
            expires_at=float(claims["exp"]),
            execution_id=execution_id,
            token_id=str(claims["jti"]),
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
