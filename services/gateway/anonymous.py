"""Callers without credentials, when the deployment admits them (GATEWAY_ANONYMOUS_ACCESS).

Legacy clients were written for a service without tokens. A deployment may admit them as one
principal: a client of one tenant (config.py refuses any other role, and refuses a gateway
other machines reach unless the network is declared trusted). Everything else stays as it is:
a request that carries credentials is judged by them alone (a bad token is 401, never
anonymous), and the engine still decides what the principal may do, because the gateway
forwards a token of its own for it, signed with the deployment's secret and renewed long
before it ends.

Browsers are held to what the deployment allows them: a request without credentials that a
page of another origin sends is admitted only from an origin on the CORS list (the WebSocket
list on `/ws`), so any website a user happens to visit cannot act as the anonymous principal.
On a loopback-only gateway the `Host` must name this machine too: a page whose domain is
re-pointed at 127.0.0.1 (DNS rebinding) would otherwise count as same-origin.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from aiohttp import web

from services.auth import Principal, ServiceToken, TokenAuthority
from services.gateway.config import Settings, is_loopback
from services.gateway.errors import Unauthorized

SUBJECT = "anonymous"
WEBSOCKET_ROUTE = "/ws/{execution_id}"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="discovery"'}


class AnonymousAccess:
    def __init__(self, settings: Settings, authority: TokenAuthority) -> None:
        self.principal = Principal(
            subject=SUBJECT,
            role=settings.anonymous_role,
            tenant=settings.anonymous_tenant,
            # The principal does not expire; the token forwarded for it is renewed.
            expires_at=math.inf,
        )
        self._token = ServiceToken(
            authority,
            subject=SUBJECT,
            role=settings.anonymous_role,
            tenant=settings.anonymous_tenant,
        )
        self._check_host = is_loopback(settings.host) and not settings.trusted_network
        self._cors_origins = frozenset(settings.cors_origins)
        self._ws_origins = frozenset(settings.ws_allowed_origins)

    def token(self) -> str:
        """What the gateway forwards to the engine for the anonymous principal."""
        return self._token.token()

    def admit(self, request: web.Request, canonical: str) -> None:
        """Raises Unauthorized unless this request without credentials may be anonymous."""
        if self._check_host and not is_loopback(urlsplit(f"//{request.host}").hostname or ""):
            raise Unauthorized(
                "credentials required: this gateway admits requests without them only "
                "addressed to this machine (localhost)",
                code="NO_CREDENTIALS",
                headers=_CHALLENGE,
            )
        origin = request.headers.get("Origin")
        if origin is None:
            return  # not a browser page: a legacy client, curl, a script
        origin = origin.rstrip("/")
        if urlsplit(origin).netloc.lower() == request.host.lower():
            return  # the gateway's own pages
        allowed = self._ws_origins if canonical == WEBSOCKET_ROUTE else self._cors_origins
        if origin not in allowed:
            raise Unauthorized(
                f"credentials required: requests without them are not admitted from origin "
                f"{origin[:100]!r}",
                code="NO_CREDENTIALS",
                headers=_CHALLENGE,
            )
