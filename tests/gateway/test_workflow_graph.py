"""Steps side by side and retries over the REST API: `after` in a definition, `running_steps`
in the status document, `POST /executions/{id}/retry`. Real gateway, engine, pioneer."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.gateway.harness import Api, sleep_step


async def _status(api: Api, execution_id: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/executions/{execution_id}/status")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def test_branches_side_by_side_are_listed_in_the_status(api: Api) -> None:
    workflow_id = await api.workflow(
        {"name": "a", "handler": "echo"},
        sleep_step("b", after=["a"]),
        sleep_step("c", after=["a"]),
        {"name": "d", "handler": "echo", "after": ["b", "c"]},
    )
    status, workflow = await api.call("GET", f"/workflows/{workflow_id}")
    assert status == 200
    assert [s["after"] for s in workflow["steps"]] == [[], ["a"], ["a"], ["b", "c"]]
    assert workflow["max_parallel_steps"] == 10

    status, started = await api.call(
        "POST", f"/workflows/{workflow_id}/execute-async", {"seconds": 1.0}
    )
    assert status == 202, started
    execution_id = started["execution_id"]
    for _ in range(200):
        document = await _status(api, execution_id)
        if len(document["running_steps"]) == 2:
            break
        await asyncio.sleep(0.05)
    assert [s["name"] for s in document["running_steps"]] == ["b", "c"]
    # The legacy key keeps its shape: one step, the lowest in order of those running.
    assert document["current_step"] == document["running_steps"][0]
    assert document["current_step"]["order"] == 2


async def test_a_definition_whose_steps_wait_in_a_cycle_is_refused(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/workflows",
        {
            "name": "cycle",
            "steps": [
                {"name": "a", "handler": "echo", "after": ["b"]},
                {"name": "b", "handler": "echo", "after": ["a"]},
            ],
        },
    )
    assert status == 422, body
    assert "a -> b -> a" in str(body)
    status, body = await api.call(
        "POST",
        "/workflows",
        {"name": "bad after", "steps": [{"name": "a", "handler": "echo", "after": "b"}]},
    )
    assert status == 422, body
    assert "steps[0].after" in str(body)


async def test_a_cancelled_run_is_retried_over_rest(api: Api) -> None:
    workflow_id = await api.workflow({"name": "first", "handler": "echo"}, sleep_step("nap"))
    status, started = await api.call(
        "POST", f"/workflows/{workflow_id}/execute-async", {"seconds": 30}
    )
    execution_id = started["execution_id"]
    for _ in range(400):
        if (await _status(api, execution_id))["current_step"]["name"] == "nap":
            break
        await asyncio.sleep(0.05)
    status, _ = await api.call("POST", f"/executions/{execution_id}/cancel", {})
    assert status == 200

    status, body = await api.call(
        "POST", f"/executions/{execution_id}/retry", {"from_step": "no such step"}
    )
    assert status == 422 and "from_step" in str(body), body

    status, retried = await api.call(
        "POST", f"/executions/{execution_id}/retry", {"request_id": "r1"}
    )
    assert status == 200, retried
    assert retried["status"] == "running" and retried["retries"] == 1
    assert [s["name"] for s in retried["running_steps"]] == ["nap"]
    assert retried["error"] is None

    status, body = await api.call("POST", f"/executions/{execution_id}/retry", {})
    assert status == 409, body
    assert "running" in str(body)
    # The same request again is the same retry, answered as the run stands.
    status, again = await api.call(
        "POST", f"/executions/{execution_id}/retry", {"request_id": "r1"}
    )
    assert status == 200 and again["retries"] == 1
    await api.call("POST", f"/executions/{execution_id}/cancel", {})
