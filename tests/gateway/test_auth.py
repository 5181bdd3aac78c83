"""Who may do what through the gateway: every route but the public ones refused without a
token, roles and tenants held as on the engine, and a browser's scoped watch token."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest
from aiohttp import web
from discovery.engine.v1 import token_service_pb2 as ts
from discovery.engine.v1 import token_service_pb2_grpc as ts_grpc

from services.auth import ADMIN, CLIENT, RUNNER, WATCHER
from tests.gateway.harness import Api, Gateway, GatewayStack, sleep_step
from tests.stack import AUTHORITY, Client, token

PUBLIC = {"/", "/dashboard/{name}", "/health", "/openapi.json"}
EXTERNAL = {"name": "fetch_user", "handler": "external", "heartbeat_timeout_seconds": 30}


def concrete(canonical: str) -> str:
    """A path the route matches: every {placeholder} filled with a plausible id."""
    return re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-000000000000", canonical)


def api_routes(app: web.Application) -> list[tuple[str, str]]:
    return sorted(
        {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
    )


async def test_every_route_but_the_public_ones_needs_a_token(gateway: Gateway) -> None:
    routes = api_routes(gateway.app)
    assert len(routes) >= 18, routes  # the table below really walks the whole router
    async with aiohttp.ClientSession() as anonymous:
        for method, canonical in routes:
            async with anonymous.request(method, gateway.url + concrete(canonical)) as response:
                if canonical in PUBLIC:
                    assert response.status != 401, canonical
                    continue
                body = await response.json()
                assert response.status == 401, (method, canonical)
                assert body["error"]["code"] == "NO_CREDENTIALS", body
                assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("Bearer nonsense", "BAD_TOKEN"),
        (f"Bearer {token(ttl_seconds=-120)}", "TOKEN_EXPIRED"),
        (f"Token {token()}", "BAD_TOKEN"),
    ],
)
async def test_a_bad_token_is_401_with_its_reason(
    gateway: Gateway, authorization: str, code: str
) -> None:
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{gateway.url}/workflows", headers={"Authorization": authorization}) as r,
    ):
        assert r.status == 401
        assert (await r.json())["error"]["code"] == code


async def test_roles_are_held_to_their_own_routes(api: Api, gateway: Gateway) -> None:
    workflow_id = await api.workflow(EXTERNAL)
    execution_id = await api.start(workflow_id)
    as_client = {"Authorization": f"Bearer {token(CLIENT)}"}
    as_runner = {"Authorization": f"Bearer {token(RUNNER)}"}

    definition = {"name": "x", "steps": [{"name": "a", "handler": "echo"}]}
    status, body = await api.call("POST", "/workflows", definition, headers=as_client)
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")
    status, _ = await api.call("GET", f"/executions/{execution_id}/status", headers=as_client)
    assert status == 200
    status, body = await api.call("GET", f"/executions/{execution_id}/status", headers=as_runner)
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")
    status, _ = await api.call(
        "POST",
        f"/executions/{execution_id}/steps/fetch_user/progress",
        {"percentage": 5},
        headers={**as_client, "X-Attempt-Token": "whatever"},
    )
    assert status == 403
    await api.call("POST", f"/executions/{execution_id}/cancel")


async def test_another_tenants_execution_is_answered_as_a_missing_one(api: Api) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    execution_id = await api.start(workflow_id)
    missing = "00000000-0000-4000-8000-000000000000"
    stranger = {"Authorization": f"Bearer {token(ADMIN, tenant='someone-else')}"}
    for path in ("/executions/{}/status", "/executions/{}/steps"):
        theirs = await api.call("GET", path.format(execution_id), headers=stranger)
        nobodys = await api.call("GET", path.format(missing), headers=stranger)
        assert theirs[0] == nobodys[0] == 404
        assert theirs[1]["error"]["code"] == nobodys[1]["error"]["code"]
        assert theirs[1]["error"]["message"].replace(execution_id, "ID") == nobodys[1]["error"][
            "message"
        ].replace(missing, "ID")
    status, listed = await api.call("GET", "/executions", headers=stranger)
    assert status == 200
    assert execution_id not in {e["execution_id"] for e in listed["executions"]}


async def test_a_browser_follows_its_run_with_the_watch_token_it_was_given(
    api: Api, gateway: Gateway
) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    status, started = await api.call(
        "POST", f"/workflows/{workflow_id}/execute-async", {"seconds": 0.2}
    )
    assert status == 202
    execution_id, watch = started["execution_id"], started["watch_token"]
    other = await api.start(workflow_id)

    async with aiohttp.ClientSession() as browser:  # no Authorization header, as a browser
        url = f"{gateway.ws_url}/ws/{execution_id}?after_seq=0&access_token={watch}"
        async with browser.ws_connect(url) as ws:
            events = [message.json() async for message in ws]
        assert events[-1]["event"] == "workflow_completed"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        # The same token on another execution: as missing as a wrong id.
        async with browser.ws_connect(f"{gateway.ws_url}/ws/{other}?access_token={watch}") as ws:
            message = await ws.receive_json()
            assert message["error"]["code"] == "EXECUTION_NOT_FOUND"
            await ws.receive()
            assert ws.close_code == 4404
        # SSE takes it the same way; REST reads with it in the header only.
        async with browser.get(
            f"{gateway.url}/executions/{execution_id}/events?after_seq=0&access_token={watch}"
        ) as response:
            assert response.status == 200
            assert "workflow_completed" in await response.text()
        async with browser.get(
            f"{gateway.url}/executions/{execution_id}/status?access_token={watch}"
        ) as response:
            assert response.status == 401
        async with browser.get(
            f"{gateway.url}/executions/{execution_id}/status",
            headers={"Authorization": f"Bearer {watch}"},
        ) as response:
            assert response.status == 200
        # It starts nothing.
        async with browser.post(
            f"{gateway.url}/workflows/{workflow_id}/execute-async",
            json={},
            headers={"Authorization": f"Bearer {watch}"},
        ) as response:
            assert response.status == 403


async def test_a_fresh_watch_token_is_only_for_whom_may_see_the_execution(api: Api) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    execution_id = await api.start(workflow_id)
    status, ticket = await api.call("POST", f"/executions/{execution_id}/watch-token")
    assert status == 200 and ticket["execution_id"] == execution_id
    assert ticket["expires_in"] == 900
    stranger = {"Authorization": f"Bearer {token(CLIENT, tenant='someone-else')}"}
    status, body = await api.call(
        "POST", f"/executions/{execution_id}/watch-token", headers=stranger
    )
    assert status == 404, body


async def test_a_watch_token_cannot_mint_its_own_replacement(api: Api) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    execution_id = await api.start(workflow_id)
    status, ticket = await api.call("POST", f"/executions/{execution_id}/watch-token")
    assert status == 200
    as_watcher = {"Authorization": f"Bearer {ticket['watch_token']}"}
    status, body = await api.call(
        "POST", f"/executions/{execution_id}/watch-token", headers=as_watcher
    )
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED"), body
    assert "watcher" in body["error"]["message"]


@pytest.mark.parametrize("path", ["/ws/{id}", "/executions/{id}/events"])
async def test_only_a_watch_token_is_taken_from_the_query(
    api: Api, gateway: Gateway, path: str
) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    execution_id = await api.start(workflow_id)
    url = gateway.url + path.format(id=execution_id)
    async with aiohttp.ClientSession() as browser:
        for role in (CLIENT, ADMIN):
            async with browser.get(f"{url}?access_token={token(role)}") as response:
                body = await response.json()
                assert response.status == 401, body
                assert body["error"]["code"] == "BAD_TOKEN"
                assert "watch token" in body["error"]["message"]


def expiry(watch: str) -> float:
    return AUTHORITY.verify(watch).expires_at


async def long_run(api: Api) -> str:
    return await api.start(await api.workflow(sleep_step()), {"seconds": 60})


async def test_a_websocket_ends_when_its_token_does(api: Api, gateway: Gateway) -> None:
    execution_id = await long_run(api)
    try:
        watch = token(WATCHER, ttl_seconds=3, execution_id=execution_id)
        async with aiohttp.ClientSession() as browser:
            url = f"{gateway.ws_url}/ws/{execution_id}?access_token={watch}"
            async with browser.ws_connect(url) as ws, asyncio.timeout(60):
                messages = [message.json() async for message in ws]
                closed_at = time.time()
            assert ws.close_code == 4401
        assert closed_at >= expiry(watch)
        assert messages[0]["event"] == "snapshot"
        ending = messages[-1]
        assert ending["event"] == "error" and ending["error"]["code"] == "TOKEN_EXPIRED"
        assert f"after_seq={messages[-2]['seq']}" in ending["error"]["message"]
    finally:
        await api.call("POST", f"/executions/{execution_id}/cancel", {})


async def test_an_event_stream_ends_when_its_token_does(api: Api, gateway: Gateway) -> None:
    execution_id = await long_run(api)
    try:
        watch = token(WATCHER, ttl_seconds=3, execution_id=execution_id)
        async with aiohttp.ClientSession() as browser, asyncio.timeout(60):
            url = f"{gateway.url}/executions/{execution_id}/events?access_token={watch}"
            async with browser.get(url) as response:
                assert response.status == 200
                text = await response.text()  # to the end of the stream
                closed_at = time.time()
        assert closed_at >= expiry(watch)
        last = text.strip().split("\n\n")[-1]
        assert last.startswith("data: ") and '"TOKEN_EXPIRED"' in last, text
    finally:
        await api.call("POST", f"/executions/{execution_id}/cancel", {})


async def test_a_revoked_token_ends_its_streams_and_is_refused(
    api: Api, gateway: Gateway, gw_stack: GatewayStack
) -> None:
    execution_id = await long_run(api)
    leaked = token(CLIENT)
    headers = {"Authorization": f"Bearer {leaked}"}
    admin = Client(f"127.0.0.1:{gw_stack.engine.port}")
    try:
        async with aiohttp.ClientSession(headers=headers) as holder:
            events = f"{gateway.url}/executions/{execution_id}/events"
            async with (
                holder.ws_connect(f"{gateway.ws_url}/ws/{execution_id}") as ws,
                holder.get(events) as stream,
                asyncio.timeout(60),
            ):
                assert (await ws.receive_json())["event"] == "snapshot"
                assert stream.status == 200
                await ts_grpc.TokenServiceStub(admin.channel).RevokeToken(
                    ts.RevokeTokenRequest(token=leaked), timeout=5
                )
                messages = [message.json() async for message in ws]
                text = await stream.text()
            assert ws.close_code == 4401
            assert messages[-1]["error"]["code"] == "TOKEN_REVOKED"
            assert '"TOKEN_REVOKED"' in text.strip().split("\n\n")[-1]
            async with holder.get(f"{gateway.url}/workflows") as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "TOKEN_REVOKED"
    finally:
        await admin.close()
        await api.call("POST", f"/executions/{execution_id}/cancel", {})
