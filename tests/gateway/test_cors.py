"""Cross-origin access (GATEWAY_CORS_ORIGINS, aiohttp-cors): preflights answered without a
token, listed origins echoed with credentials allowed, any other origin left without the
headers a browser needs to read the answer. No list: no CORS at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.gateway.harness import Gateway, GatewayStack, gateway_for
from tests.gateway.test_auth import PUBLIC, api_routes, concrete
from tests.stack import token

pytestmark = pytest.mark.timeout(60)

ALLOWED = "http://allowed.test:3000"
OTHER = "http://other.test:3000"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type,idempotency-key,x-attempt-token",
}


@pytest.fixture(scope="module")
async def cors_gateway(gw_stack: GatewayStack) -> AsyncIterator[Gateway]:
    async with gateway_for(gw_stack.engine.port, cors_origins=(ALLOWED,)) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_preflight_from_a_listed_origin_is_answered_without_a_token(
    cors_gateway: Gateway, browser: aiohttp.ClientSession
) -> None:
    for method, path in (
        ("POST", "/execute-async/"),
        ("POST", "/workflows/x/execute-async"),
        ("GET", "/executions/x/status"),
    ):
        asked = {**PREFLIGHT, "Access-Control-Request-Method": method}
        async with browser.options(
            cors_gateway.url + path, headers={"Origin": ALLOWED, **asked}
        ) as response:
            assert response.status == 200, (path, await response.text())
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
            assert response.headers["Access-Control-Allow-Credentials"] == "true"
            allowed = {
                h.strip().lower()
                for h in response.headers["Access-Control-Allow-Headers"].split(",")
            }
            assert allowed == {
                "authorization",
                "content-type",
                "idempotency-key",
                "x-attempt-token",
            }
            assert response.headers["Access-Control-Allow-Methods"] == method
            assert response.headers["Access-Control-Max-Age"] == "600"


async def test_a_listed_origin_reads_answers_and_their_headers(
    cors_gateway: Gateway, browser: aiohttp.ClientSession
) -> None:
    headers = {"Origin": ALLOWED, "Authorization": f"Bearer {token()}"}
    async with browser.get(f"{cors_gateway.url}/workflows", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        exposed = response.headers["Access-Control-Expose-Headers"].split(",")
        assert {"Location", "Retry-After"} <= set(exposed)
    # A refusal too: a page can tell "log in" from "network down".
    async with browser.get(f"{cors_gateway.url}/workflows", headers={"Origin": ALLOWED}) as r:
        assert r.status == 401
        assert r.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_a_preflight_for_a_method_the_route_lacks_is_refused(
    cors_gateway: Gateway, browser: aiohttp.ClientSession
) -> None:
    async with browser.options(
        f"{cors_gateway.url}/executions/x/status", headers={"Origin": ALLOWED, **PREFLIGHT}
    ) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_an_origin_not_listed_gets_no_cors_headers(
    cors_gateway: Gateway, browser: aiohttp.ClientSession
) -> None:
    async with browser.options(
        f"{cors_gateway.url}/execute-async/", headers={"Origin": OTHER, **PREFLIGHT}
    ) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    headers = {"Origin": OTHER, "Authorization": f"Bearer {token()}"}
    async with browser.get(f"{cors_gateway.url}/workflows", headers=headers) as response:
        assert response.status == 200  # the server answers; the browser keeps it from the page
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_without_a_list_there_is_no_cross_origin_access(
    gateway: Gateway, browser: aiohttp.ClientSession
) -> None:
    async with browser.options(
        f"{gateway.url}/execute-async/", headers={"Origin": ALLOWED, **PREFLIGHT}
    ) as response:
        assert response.status in (401, 405)
        assert "Access-Control-Allow-Origin" not in response.headers
    headers = {"Origin": ALLOWED, "Authorization": f"Bearer {token()}"}
    async with browser.get(f"{gateway.url}/workflows", headers=headers) as response:
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_not_on_the_websocket_route_nor_the_dashboard(
    cors_gateway: Gateway, browser: aiohttp.ClientSession
) -> None:
    for path in ("/ws/x", "/", "/dashboard/app.js"):
        async with browser.options(
            cors_gateway.url + path, headers={"Origin": ALLOWED, **PREFLIGHT}
        ) as response:
            assert response.status == 405, path
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_every_route_still_needs_a_token_but_its_preflight(
    cors_gateway: Gateway, browser: aiohttp.ClientSession
) -> None:
    routes = api_routes(cors_gateway.app)
    preflights = {canonical for method, canonical in routes if method == "OPTIONS"}
    assert len(preflights) >= 14, preflights  # CORS really is on every REST resource
    assert "/ws/{execution_id}" not in preflights
    for method, canonical in routes:
        if method == "OPTIONS" or canonical in PUBLIC:
            continue
        url = cors_gateway.url + concrete(canonical)
        async with browser.request(method, url, headers={"Origin": ALLOWED}) as response:
            assert response.status == 401, (method, canonical)
            assert (await response.json())["error"]["code"] == "NO_CREDENTIALS"
