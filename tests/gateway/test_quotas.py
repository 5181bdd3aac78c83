"""Per-tenant quotas at the gateway: live streams per tenant (429 before any upgrade), and the
engine's quota refusals as 429 with the legacy error body, the quota named, and Retry-After."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
import pytest

from services.auth import CLIENT
from tests.gateway.harness import Api, GatewayStack, gateway_for
from tests.stack import start_stack, token


def assert_quota_refusal(status: int, headers: Any, body: Any, quota: str) -> dict[str, Any]:
    assert status == 429, body
    assert int(headers["Retry-After"]) >= 1
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "QUOTA_EXCEEDED", error
    assert error["details"]["quota"] == quota, error
    return error


async def test_a_tenant_over_its_live_streams_gets_429_naming_the_quota(
    gw_stack: GatewayStack,
) -> None:
    tenant = f"streams-{uuid.uuid4().hex[:6]}"
    headers = {"Authorization": f"Bearer {token(tenant=tenant)}"}
    # Another principal of the same tenant: the per-caller cap would not stop it.
    colleague = {"Authorization": f"Bearer {token(CLIENT, tenant=tenant)}"}
    outsider = {"Authorization": f"Bearer {token(CLIENT, tenant='elsewhere')}"}
    async with (
        gateway_for(gw_stack.engine.port, max_streams_per_tenant=2) as gateway,
        aiohttp.ClientSession(headers=headers) as session,
        aiohttp.ClientSession(headers=colleague) as second,
        aiohttp.ClientSession(headers=outsider) as third,
    ):
        api = Api(session, gateway.url)
        workflow_id = await api.workflow({"name": "e", "handler": "echo"})
        runs = []
        for _ in range(3):
            status, body = await api.call(
                "POST", "/execute-async/", {"workflow_id": workflow_id, "data": {"manual": True}}
            )
            assert status == 202, body
            runs.append(body["execution_id"])
        # Two WebSockets on distinct executions: the tenant's quota.
        held = [await session.ws_connect(f"{gateway.ws_url}/ws/{run}") for run in runs[:2]]
        try:
            for ws in held:
                assert (await ws.receive_json())["event"] == "snapshot"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await second.ws_connect(f"{gateway.ws_url}/ws/{runs[2]}")
            assert refused.value.status == 429
            assert refused.value.headers is not None
            assert int(refused.value.headers["Retry-After"]) >= 1
            async with second.get(f"{gateway.url}/executions/{runs[2]}/events") as response:
                error = assert_quota_refusal(
                    response.status,
                    response.headers,
                    json.loads(await response.text()),
                    "tenant_live_streams",
                )
            assert tenant in error["message"] and "2" in error["message"]
            # Another tenant's streams are not counted with these.
            async with third.get(f"{gateway.url}/executions/{runs[2]}/events") as response:
                assert response.status == 404  # not theirs; but admitted to ask
        finally:
            for ws in held:
                await ws.close()
        # Closed streams give their place back.
        async with second.ws_connect(f"{gateway.ws_url}/ws/{runs[2]}") as ws:
            assert (await ws.receive_json())["event"] == "snapshot"


async def test_an_engine_quota_refusal_is_429_with_the_quota_named(
    mongo_server: str, database: str, session: aiohttp.ClientSession
) -> None:
    stack = await start_stack(mongo_server, database, tenant_max_running_executions=1)
    try:
        async with gateway_for(stack.engine.port) as gateway:
            api = Api(session, gateway.url)
            workflow_id = await api.workflow({"name": "e", "handler": "echo"})
            body = {"workflow_id": workflow_id, "data": {"manual": True}}
            status, started = await api.call("POST", "/execute-async/", body)
            assert status == 202, started
            async with session.post(f"{gateway.url}/execute-async/", json=body) as response:
                error = assert_quota_refusal(
                    response.status,
                    response.headers,
                    await response.json(),
                    "running_executions",
                )
            assert error["message"] == "tenant 'default' has 1 running executions (limit 1)"
            assert error["details"]["tenant"] == "default"
    finally:
        await stack.stop()


async def test_the_gateways_feeds_count_against_the_tenant_they_serve(
    mongo_server: str, database: str, session: aiohttp.ClientSession
) -> None:
    # The gateway follows each execution with a watch token of the caller's tenant: what it
    # holds at the engine for a tenant's sockets is that tenant's, not the gateway's.
    stack = await start_stack(mongo_server, database, tenant_max_long_calls=2)
    outsider = {"Authorization": f"Bearer {token(tenant='outsider')}"}
    try:
        async with (
            gateway_for(stack.engine.port) as gateway,
            aiohttp.ClientSession(headers=outsider) as other,
        ):
            runs = []
            for client in (session, session, session, other):
                api = Api(client, gateway.url)
                workflow_id = await api.workflow({"name": "e", "handler": "echo"})
                status, body = await api.call(
                    "POST",
                    "/execute-async/",
                    {"workflow_id": workflow_id, "data": {"manual": True}},
                )
                assert status == 202, body
                runs.append(body["execution_id"])
            held = [await session.ws_connect(f"{gateway.ws_url}/ws/{run}") for run in runs[:2]]
            try:
                for ws in held:
                    assert (await ws.receive_json())["event"] == "snapshot"
                async with session.ws_connect(f"{gateway.ws_url}/ws/{runs[2]}") as ws:
                    messages = [m.json() async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
                    assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
                assert messages[-1]["event"] == "error", messages
                assert messages[-1]["error"]["code"] == "QUOTA_EXCEEDED"
                assert messages[-1]["error"]["details"]["quota"] == "tenant_long_calls"
                # Another tenant's feed is its own.
                async with other.ws_connect(f"{gateway.ws_url}/ws/{runs[3]}") as ws:
                    assert (await ws.receive_json())["event"] == "snapshot"
                    await ws.close()
            finally:
                for ws in held:
                    await ws.close()
    finally:
        await stack.stop()
