"""Who is calling the gateway: every route but the public ones needs a token, checked here
before any handler runs (denied by default: a new route is closed until listed below).

The token comes in `Authorization: Bearer …`. Browsers cannot set headers on a WebSocket or
an EventSource, so those two routes also take it as `?access_token=`: the short-lived watch
token `execute-async` returns, and no other (URLs leak; the access log never prints query
strings, but proxies and browser histories may).
The gateway checks the token itself, to refuse early, and then forwards it with every call
it makes to the engine on the caller's behalf: the engine decides what that caller may see.

A deployment may admit requests without any credentials as one named principal
(anonymous.py); a request that carries credentials is judged by them alone. CORS preflights
(`OPTIONS`, cors.py; no other route answers that method) carry no credentials by design and
say nothing worth protecting: they pass.

The two step-report routes also admit a request with `X-Attempt-Token` and no
`Authorization`: an HTTP step runner the engine pushed an attempt to holds no deployment
credential, only that attempt's token. Such a request is forwarded as a runner principal the
gateway signs itself, for that one report; the engine then checks the attempt token as for
any runner (24 random bytes, bound to one attempt of one step, dead once the attempt ends: an
unknown or stale one is refused and writes nothing). A runner role lets a caller report and
poll, nothing a client may do, and the gateway routes nothing but the report with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aiohttp import hdrs, web
from multidict import MultiDict

from discovery_client import AsyncClient, BearerToken
from services.auth import WATCHER, AuthError, Principal, ServiceToken, TokenAuthority
from services.gateway.anonymous import AnonymousAccess
from services.gateway.errors import Forbidden, Unauthorized
from services.gateway.params import ATTEMPT_TOKEN_HEADER
from services.gateway.state import ENGINE

# Routes anyone may fetch: the dashboard's page and assets (it asks for a token itself), the
# API description, and the health check probes use.
PUBLIC = frozenset({"/", "/dashboard/{name}", "/health", "/openapi.json"})
QUERY_TOKEN = frozenset({"/ws/{execution_id}", "/executions/{execution_id}/events"})
# Routes an attempt token alone admits (see above).
ATTEMPT_TOKEN_ONLY = frozenset(
    {
        "/executions/{execution_id}/steps/{step_name}/progress",
        "/executions/{execution_id}/steps/{step_name}/complete",
    }
)

AUTHORITY = web.AppKey("authority", TokenAuthority)
# Set when the deployment admits requests without credentials.
ANONYMOUS = web.AppKey("anonymous", AnonymousAccess)
# The runner token the gateway signs for reports proven by their attempt token alone.
REPORTER = web.AppKey("reporter", ServiceToken)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    token: str


CALLER = web.RequestKey("caller", Caller)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    resource = route.resource
    # No resource: a 404 or 405 of the router's own, which says nothing worth protecting.
    if resource is None or resource.canonical in PUBLIC or route.method == hdrs.METH_OPTIONS:
        return await handler(request)
    if resource.canonical in QUERY_TOKEN:
        request = _one_query(request)
    header = request.headers.get("Authorization")
    from_query = (
        header is None and resource.canonical in QUERY_TOKEN and "access_token" in request.query
    )
    if from_query:
        header = f"Bearer {request.query['access_token']}"
    # Before anonymous access: a report proven by its attempt token alone is a runner's,
    # never the anonymous principal's (a client, which may not report).
    if (
        header is None
        and resource.canonical in ATTEMPT_TOKEN_ONLY
        and request.headers.get(ATTEMPT_TOKEN_HEADER, "").strip()
    ):
        header = f"Bearer {request.app[REPORTER].token()}"
    anonymous = request.app.get(ANONYMOUS)
    if header is None and anonymous is not None:
        anonymous.admit(request, resource.canonical)
        request[CALLER] = Caller(anonymous.principal, anonymous.token())
        return await handler(request)
    try:
        principal = request.app[AUTHORITY].verify_bearer(header)
    except AuthError as exc:
        raise Unauthorized(
            exc.message, code=exc.reason, headers={"WWW-Authenticate": 'Bearer realm="discovery"'}
        ) from None
    if from_query and principal.role != WATCHER:
        # URLs leak (history, proxies, Referer): only a short-lived token scoped to one
        # execution may travel in one.
        raise Unauthorized(
            f"?access_token= takes a watch token only, not a {principal.role!r} token: send "
            "that one as 'Authorization: Bearer <token>'",
            code="BAD_TOKEN",
            headers={"WWW-Authenticate": 'Bearer realm="discovery"'},
        )
    token = (header or "").strip().partition(" ")[2].strip()
    request[CALLER] = Caller(principal, token)
    return await handler(request)


def _one_query(request: web.Request) -> web.Request:
    """`websocket_url` comes with its query (`/ws/{id}?access_token=…`); a client that adds
    `?after_seq=N` to it, as the contract's clients add it to the bare path, sends a second
    `?`, which lands inside the token's value (a JWT never holds one). Read as one query."""
    token = request.query.get("access_token", "")
    if "?" not in token:
        return request
    token, _, rest = token.partition("?")
    query = MultiDict(request.query)
    query["access_token"] = token
    query.extend(parse_qsl(rest, keep_blank_values=True))
    return request.clone(rel_url=request.rel_url.with_query(query))


def caller(request: web.Request) -> Caller:
    try:
        return request[CALLER]
    except KeyError:  # a public route asking for a caller: a wiring mistake, not the user's
        raise Forbidden("this route has no caller") from None


def stream_owner(request: web.Request) -> str:
    """What live-stream caps and rates count by: one principal, from whatever address."""
    principal = caller(request).principal
    return f"{principal.tenant}/{principal.subject}"


def engine_for(request: web.Request) -> AsyncClient:
    """The engine client that acts as this request's caller."""
    return request.app[ENGINE].with_credentials(BearerToken(caller(request).token))
