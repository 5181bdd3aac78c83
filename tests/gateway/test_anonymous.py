"""Requests without credentials, when the deployment admits them (GATEWAY_ANONYMOUS_ACCESS):
one client of one tenant, forwarded to the engine with a token of its own; everything else
as before (a bad token is still 401; off, a request without credentials is 401)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from services.auth import CLIENT, TokenAuthority
from services.gateway.anonymous import AnonymousAccess
from services.gateway.config import Settings
from tests.gateway.harness import Api, Gateway, GatewayStack, gateway_for, sleep_step
from tests.stack import AUTH_KEYS, token

pytestmark = pytest.mark.timeout(60)

ECHO = {"name": "a", "handler": "echo"}


@pytest.fixture(scope="module")
async def open_gateway(gw_stack: GatewayStack) -> AsyncIterator[Gateway]:
    """A gateway that admits requests without credentials as a client of tenant `legacy`."""
    async with gateway_for(
        gw_stack.engine.port,
        anonymous_access=True,
        anonymous_tenant="legacy",
        max_streams_per_client=2,
        cors_origins=("http://allowed.test:3000",),
    ) as running:
        yield running


@pytest.fixture
async def anonymous(open_gateway: Gateway) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as plain:  # no Authorization header, as the seed's
        yield Api(plain, open_gateway.url)


async def legacy_workflow(api: Api, *steps: dict[str, Any]) -> str:
    """A workflow of tenant `legacy`, defined by its operator (an admin token); a name of
    its own, as a name is one workflow's in a tenant and the tests share the engine."""
    admin = {"Authorization": f"Bearer {token(tenant='legacy')}"}
    name = f"legacy wf {uuid.uuid4().hex[:8]}"
    status, body = await api.call(
        "POST", "/workflows", {"name": name, "steps": list(steps)}, headers=admin
    )
    assert status == 201, body
    workflow_id: str = body["workflow_id"]
    return workflow_id


async def test_off_a_request_without_credentials_is_401_as_before(api: Api) -> None:
    async with aiohttp.ClientSession() as plain:
        status, body = await Api(plain, api.base).call("GET", "/workflows")
    assert (status, body["error"]["code"]) == (401, "NO_CREDENTIALS")


async def test_on_a_request_without_credentials_is_a_client_of_the_named_tenant(
    anonymous: Api, api: Api
) -> None:
    workflow_id = await legacy_workflow(anonymous, ECHO)
    status, listed = await anonymous.call("GET", "/workflows")
    assert status == 200
    assert workflow_id in {w["workflow_id"] for w in listed["workflows"]}
    # The default tenant's workflows are not the anonymous caller's.
    default_workflow = await api.workflow(ECHO)
    status, body = await anonymous.call("GET", f"/workflows/{default_workflow}")
    assert status == 404, body

    execution_id = await anonymous.start(workflow_id)
    assert (await anonymous.wait_terminal(execution_id))["status"] == "completed"
    # It belongs to tenant `legacy`: its operator sees it, another tenant does not.
    as_legacy = {"Authorization": f"Bearer {token(CLIENT, tenant='legacy')}"}
    status, _ = await api.call("GET", f"/executions/{execution_id}/status", headers=as_legacy)
    assert status == 200
    status, _ = await api.call("GET", f"/executions/{execution_id}/status")
    assert status == 404

    # A client, never an admin: it defines nothing.
    status, body = await anonymous.call("POST", "/workflows", {"name": "x", "steps": [ECHO]})
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("Bearer nonsense", "BAD_TOKEN"),
        (f"Bearer {token(ttl_seconds=-120)}", "TOKEN_EXPIRED"),
        (f"Token {token()}", "BAD_TOKEN"),
        ("", "NO_CREDENTIALS"),
    ],
)
async def test_a_bad_token_is_still_401_never_anonymous(
    anonymous: Api, authorization: str, code: str
) -> None:
    status, body = await anonymous.call(
        "GET", "/workflows", headers={"Authorization": authorization}
    )
    assert (status, body["error"]["code"]) == (401, code)


async def test_a_bad_access_token_on_the_websocket_is_still_401(
    anonymous: Api, open_gateway: Gateway
) -> None:
    workflow_id = await legacy_workflow(anonymous, ECHO)
    execution_id = await anonymous.start(workflow_id)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await anonymous.session.ws_connect(
            f"{open_gateway.ws_url}/ws/{execution_id}?access_token=nonsense"
        )
    assert refused.value.status == 401


async def test_anonymous_streams_count_as_one_principal(
    anonymous: Api, open_gateway: Gateway
) -> None:
    workflow_id = await legacy_workflow(anonymous, sleep_step())
    execution_id = await anonymous.start(workflow_id, {"seconds": 5})
    url = f"{open_gateway.ws_url}/ws/{execution_id}"
    # Two clients without credentials, each its own connection: the cap (2 per principal,
    # set above) counts them together.
    async with (
        aiohttp.ClientSession() as first,
        aiohttp.ClientSession() as second,
        aiohttp.ClientSession() as third,
        first.ws_connect(url),
        second.ws_connect(url),
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await third.ws_connect(url)
        assert refused.value.status == 429
        # A caller with a token of its own is another principal, and is let in.
        own = {"Authorization": f"Bearer {token(CLIENT, tenant='legacy')}"}
        async with third.ws_connect(url, headers=own) as ws:
            assert (await ws.receive_json(timeout=10))["event"] == "snapshot"
    status, _ = await anonymous.call("POST", f"/executions/{execution_id}/cancel", {})
    assert status == 200


async def test_a_page_of_an_origin_not_listed_is_not_anonymous(
    anonymous: Api, open_gateway: Gateway
) -> None:
    status, body = await anonymous.call("GET", "/workflows", headers={"Origin": "http://evil.test"})
    assert (status, body["error"]["code"]) == (401, "NO_CREDENTIALS")
    status, _ = await anonymous.call(
        "GET", "/workflows", headers={"Origin": "http://allowed.test:3000"}
    )
    assert status == 200
    # The gateway's own pages are its own origin.
    status, _ = await anonymous.call("GET", "/workflows", headers={"Origin": open_gateway.url})
    assert status == 200


async def test_on_loopback_a_request_for_another_host_name_is_not_anonymous(
    anonymous: Api,
) -> None:
    """A page whose domain was re-pointed at 127.0.0.1 (DNS rebinding) names its own host."""
    status, body = await anonymous.call(
        "GET", "/workflows", headers={"Host": "rebound.example:8080"}
    )
    assert (status, body["error"]["code"]) == (401, "NO_CREDENTIALS")
    status, _ = await anonymous.call("GET", "/workflows", headers={"Host": "localhost:8080"})
    assert status == 200


def test_the_forwarded_token_is_a_client_of_the_tenant_and_renewed_before_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    authority = TokenAuthority(AUTH_KEYS)
    access = AnonymousAccess(
        Settings(anonymous_access=True, anonymous_tenant="legacy", auth_keys=AUTH_KEYS),
        authority,
    )
    first = access.token()
    principal = authority.verify(first)
    assert (principal.subject, principal.role, principal.tenant) == (
        "anonymous",
        "client",
        "legacy",
    )
    assert access.token() == first  # not minted per request
    lifetime = principal.expires_at - time.time()
    later = time.time() + lifetime * 0.6
    monkeypatch.setattr(time, "time", lambda: later)
    renewed = access.token()
    assert renewed != first
    # Signed for the later clock (PyJWT's own clock is not moved, so read it unverified).
    claims = jwt.decode(renewed, options={"verify_signature": False})
    assert claims["exp"] > principal.expires_at and claims["sub"] == "anonymous"


async def test_the_websocket_url_follows_the_run_and_its_token_stays_out_of_the_log(
    anonymous: Api, open_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    workflow_id = await legacy_workflow(anonymous, ECHO)
    status, started = await anonymous.call(
        "POST", "/execute-async/", {"workflow_id": workflow_id, "data": {}}
    )
    assert status == 202
    watch = started["watch_token"]
    execution_id = started["execution_id"]
    assert started["websocket_url"] == f"/ws/{execution_id}?access_token={watch}"
    # As the seed's browser client: ws://host + websocket_url, nothing added.
    async with anonymous.session.ws_connect(open_gateway.ws_url + started["websocket_url"]) as ws:
        events = [message.json()["event"] async for message in ws]
    assert events[0] == "snapshot" and events[-1] in ("workflow_completed", "snapshot")
    # The socket's line is written once the server side has finished with it.
    for _ in range(100):
        lines = [record.getMessage() for record in caplog.records]
        if any(f"/ws/{execution_id}" in line for line in lines):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"no access log line for the WebSocket: {lines}")
    assert not any(watch in line or "access_token" in line for line in lines), lines


async def test_on_a_report_with_only_an_attempt_token_is_still_the_runners(
    anonymous: Api, gw_stack: GatewayStack
) -> None:
    """A pushed HTTP runner's report (X-Attempt-Token, no Authorization) is forwarded as a
    runner, not as the anonymous client, which may not report."""
    workflow_id = await legacy_workflow(
        anonymous, {"name": "fetch_user", "handler": "external", "heartbeat_timeout_seconds": 10}
    )
    execution_id = await anonymous.start(workflow_id)
    attempt = await gw_stack.external.next_attempt(execution_id)
    base = f"/executions/{execution_id}/steps/fetch_user"
    only_token = {"X-Attempt-Token": attempt.attempt_token}
    status, reply = await anonymous.call(
        "POST", f"{base}/progress", {"percentage": 30}, headers=only_token
    )
    assert status == 200 and reply["cancel_requested"] is False, reply
    status, body = await anonymous.call(
        "POST", f"{base}/progress", {"percentage": 40}, headers={"X-Attempt-Token": "forged"}
    )
    assert (status, body["error"]["code"]) == (409, "STALE_ATTEMPT")
    status, _ = await anonymous.call(
        "POST", f"{base}/complete", {"success": True}, headers=only_token
    )
    assert status == 200
    assert (await anonymous.wait_terminal(execution_id))["status"] == "completed"
