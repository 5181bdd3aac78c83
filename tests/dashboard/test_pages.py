"""What the dashboard stands on, over plain HTTP: the page and its files served from the
gateway (and nothing else from disk), and `GET /executions`, the list it shows."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.gateway.pages import DASHBOARD_DIR
from tests.dashboard.conftest import Dashboard
from tests.stack import token

pytestmark = pytest.mark.timeout(30)

IMPORT = re.compile(r"""(?:from|import)\s+["'](\./[^"']+)["']""")
SUMMARY_KEYS = {
    "execution_id",
    "workflow_id",
    "workflow_name",
    "status",
    "created_at",
    "updated_at",
    "current_step",
    "progress",
}


@pytest.fixture
async def http(dashboard: Dashboard) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=dashboard.gateway.url, headers={"Authorization": f"Bearer {token()}"}
    ) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with http.get(path) as response:
        return response.status, await response.json()


async def test_the_page_is_served_at_the_root_held_to_its_origin(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        policy = response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert '<script type="module" src="/dashboard/app.js"></script>' in page
    assert "<script>" not in page  # nothing inline: the policy would refuse it


async def test_every_module_the_page_imports_is_served_as_javascript(
    http: aiohttp.ClientSession,
) -> None:
    pending, seen = ["app.js"], set()
    while pending:
        name = pending.pop()
        seen.add(name)
        async with http.get(f"/dashboard/{name}") as response:
            assert response.status == 200, name
            assert response.content_type == "text/javascript", name
            source = await response.text()
        pending += [m.removeprefix("./") for m in IMPORT.findall(source)]
        pending = [n for n in pending if n not in seen]
    assert seen == {p.name for p in DASHBOARD_DIR.glob("*.js")}
    async with http.get("/dashboard/dashboard.css") as response:
        assert response.status == 200 and response.content_type == "text/css"


@pytest.mark.parametrize(
    "path", ["/dashboard/missing.js", "/dashboard/..%2Fpages.py", "/dashboard/%2E%2E/app.py"]
)
async def test_nothing_else_is_served_from_disk(http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(path) as response:
        assert response.status == 404
        body = await response.json()
    assert body["error"]["code"] == "NOT_FOUND"


async def test_recent_executions_are_listed_newest_first(
    http: aiohttp.ClientSession, dashboard: Dashboard
) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"listar-{uuid.uuid4().hex[:6]}", {"name": "eco", "handler": "echo"}
    )
    started = [(await client.start(workflow.workflow_id, {"n": n})).execution_id for n in range(3)]
    await client.wait_terminal(started[-1])

    # The list reads the stored projection, which may trail the log by a write.
    for _ in range(50):
        status, body = await get_json(http, "/executions?limit=2")
        assert status == 200
        if body["executions"][0]["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert [e["execution_id"] for e in body["executions"]] == started[::-1][:2]
    newest = body["executions"][0]
    assert set(newest) == SUMMARY_KEYS
    assert newest["workflow_name"] == workflow.name
    assert newest["status"] == "completed"
    assert newest["progress"]["percentage"] == 100 and newest["progress"]["is_completed"]

    status, rest = await get_json(http, f"/executions?limit=1&page_token={body['next_page_token']}")
    assert status == 200
    assert [e["execution_id"] for e in rest["executions"]] == [started[0]]

    status, default = await get_json(http, "/executions")
    assert status == 200 and len(default["executions"]) <= 20


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", ""])
async def test_a_bad_limit_is_refused_naming_it(http: aiohttp.ClientSession, limit: str) -> None:
    status, body = await get_json(http, f"/executions?limit={limit}")
    assert status == 400
    assert body["error"]["details"]["field"] == "limit"
