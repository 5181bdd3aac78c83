"""Cross-origin access to the REST API for the browser origins a deployment lists
(GATEWAY_CORS_ORIGINS), with aiohttp-cors: preflights, and the response headers that let a
page of a listed origin read the answer. No list, no CORS at all: browsers keep every other
origin's pages from reading anything, as before.

Credentials are allowed (a page may send its token in `Authorization`), so an origin is
only ever echoed when it is on the list, never `*`. Not applied to the WebSocket route
(browsers do not preflight a WebSocket and ignore these headers on it; its origins are
GATEWAY_WS_ALLOWED_ORIGINS, websocket.py) nor to the dashboard's own page and files.
"""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from services.gateway.config import Settings
from services.gateway.params import ATTEMPT_TOKEN_HEADER

# What a page sends besides the CORS-safelisted headers.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", ATTEMPT_TOKEN_HEADER)
# What a page may read besides the safelisted response headers: where a started execution
# is, when to retry after a 429 or 503, and how to authenticate after a 401.
EXPOSED_HEADERS = ("Location", "Retry-After", "WWW-Authenticate")
# How long a browser may cache a preflight's answer.
PREFLIGHT_MAX_AGE_SECONDS = 600
NOT_CROSS_ORIGIN = frozenset({"/ws/{execution_id}", "/", "/dashboard/{name}"})


def setup(app: web.Application, settings: Settings) -> None:
    """Call after every route is added: the routes present then are the ones covered."""
    if not settings.cors_origins:
        return
    # aiohttp-cors 0.8.1 ships py.typed but leaves ResourceOptions' constructor unannotated.
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=True,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE_SECONDS,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(settings.cors_origins, options))
    # Route by route: a resource added whole allows no method in a preflight.
    for route in list(app.router.routes()):
        if route.resource is not None and route.resource.canonical not in NOT_CROSS_ORIGIN:
            cors.add(route)
