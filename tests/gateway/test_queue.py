"""`GET /queue` and a queued step in the legacy shapes: what waits in the step queue, by
handler, and the runners that poll it; an attempt nobody has taken yet shows as `queued`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from services.auth import CLIENT, RUNNER, WATCHER
from tests.gateway.external_runner import HANDLER as EXTERNAL_HANDLER
from tests.gateway.external_runner import RUNNER_ID as EXTERNAL_RUNNER_ID
from tests.gateway.harness import Api, Gateway, GatewayStack, sleep_step
from tests.stack import token

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DEPTH_KEYS = {"handler", "ready", "oldest_queued_at", "oldest_wait_seconds"}
RUNNER_KEYS = {"runner_id", "handlers", "free_slots", "last_poll_at"}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def eventually(
    probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], seconds: float = 10
) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {seconds:g} s: {value}")
        await asyncio.sleep(0.05)


async def queue(api: Api) -> dict[str, Any]:
    status, body = await api.call("GET", "/queue")
    assert status == 200, body
    answer: dict[str, Any] = body
    return answer


def sleeping(answer: dict[str, Any], part: str) -> dict[str, Any] | None:
    return next((d for d in answer[part] if d["handler"] == "sleep"), None)


async def test_the_queue_needs_a_token_and_a_client_or_admin_role(
    api: Api, gateway: Gateway
) -> None:
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{gateway.url}/queue") as response,
    ):
        assert response.status == 401
        body = await response.json()
    assert body["error"]["code"] == "NO_CREDENTIALS"
    # A runner pulls work, a watcher follows one execution: neither reads the queue.
    for refused in (token(RUNNER), token(WATCHER, execution_id="e-1")):
        status, body = await api.call("GET", "/queue", headers=bearer(refused))
        assert status == 403, body
        assert set(body["error"]) == {"code", "message", "details"}
    status, body = await api.call("GET", "/queue", headers=bearer(token(CLIENT)))
    assert status == 200, body


async def test_the_queue_lists_the_runners_that_poll(api: Api, gw_stack: GatewayStack) -> None:
    answer = await queue(api)
    assert set(answer) == {"tenant", "total", "runners"}
    runners = {r["runner_id"]: r for r in answer["runners"]}
    assert {gw_stack.pioneer.name, EXTERNAL_RUNNER_ID} <= set(runners)
    for runner in runners.values():
        assert set(runner) == RUNNER_KEYS
        assert ISO_Z.match(runner["last_poll_at"])
        assert isinstance(runner["free_slots"], int)
    assert runners[EXTERNAL_RUNNER_ID]["handlers"] == [EXTERNAL_HANDLER]
    assert {"sleep", "echo", "fail"} <= set(runners[gw_stack.pioneer.name]["handlers"])
    assert runners[gw_stack.pioneer.name]["free_slots"] > 0


async def test_a_step_nobody_takes_is_queued_counted_and_then_runs(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow(sleep_step("nap"))
    await gw_stack.pioneer.stop()  # nobody offers `sleep` now
    try:
        execution_id = await api.start(workflow_id, {"seconds": 0.2})

        answer = await eventually(
            lambda: queue(api), lambda a: (sleeping(a, "tenant") or {}).get("ready", 0) >= 1
        )
        mine = sleeping(answer, "tenant")
        assert mine is not None and set(mine) == DEPTH_KEYS
        assert ISO_Z.match(mine["oldest_queued_at"])
        assert mine["oldest_wait_seconds"] >= 0
        total = sleeping(answer, "total")
        assert total is not None and set(total) == DEPTH_KEYS
        assert total["ready"] >= mine["ready"]
        assert total["oldest_queued_at"] <= mine["oldest_queued_at"]

        # Another tenant sees the total, never this tenant's own line.
        status, other = await api.call(
            "GET", "/queue", headers=bearer(token(CLIENT, tenant="someone-else"))
        )
        assert status == 200, other
        assert sleeping(other, "tenant") is None
        assert (sleeping(other, "total") or {}).get("ready", 0) >= 1

        # The status and the steps listing say queued: taken by nobody, started never.
        document = await api.status(execution_id)
        assert document["status"] == "running"
        (entry,) = document["steps_history"]
        assert entry["status"] == "queued"
        assert ISO_Z.match(entry["queued_at"])
        assert entry["started_at"] is None and entry["finished_at"] is None
        assert entry["runner_id"] is None
        assert document["priority"] == 3
        status, listing = await api.call("GET", f"/executions/{execution_id}/steps")
        assert status == 200, listing
        (step,) = listing["steps"]
        assert step["state"] == "queued"
        assert [a["status"] for a in step["attempts"]] == ["queued"]
    finally:
        await gw_stack.pioneer.start()

    final = await api.wait_terminal(execution_id)
    assert final["status"] == "completed"
    (entry,) = final["steps_history"]
    assert entry["status"] == "success"
    assert entry["runner_id"] == gw_stack.pioneer.name
    assert entry["queued_at"] <= entry["started_at"] <= entry["finished_at"]
    # Taken: nothing of it waits any more.
    await eventually(
        lambda: queue(api), lambda a: (sleeping(a, "tenant") or {}).get("ready", 0) == 0
    )


async def test_a_priority_is_taken_by_the_legacy_start_and_checked(api: Api) -> None:
    workflow_id = await api.workflow({"name": "eco", "handler": "echo"})
    status, started = await api.call(
        "POST", "/execute-async/", {"workflow_id": workflow_id, "data": {}, "priority": 1}
    )
    assert status == 202, started
    final = await api.wait_terminal(started["execution_id"])
    assert final["priority"] == 1
    (entry,) = final["steps_history"]
    assert ISO_Z.match(entry["queued_at"]) and entry["queued_at"] <= entry["started_at"]
    for bad in (0, 6, 2.5, "1", True):
        status, body = await api.call(
            "POST", "/execute-async/", {"workflow_id": workflow_id, "priority": bad}
        )
        assert status == 422, (bad, body)
        assert body["error"]["details"]["field"] == "priority"
