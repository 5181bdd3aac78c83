"""A step runner that speaks only HTTP, as curl would: it pulls work from `POST
/step-queue/poll` with a runner's token and reports on the step routes with the attempt's
token, against a real gateway and engine. No gRPC on the runner's side."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import step_queue_service_pb2 as sq

from services.auth import RUNNER
from tests.gateway.harness import Api, Gateway, GatewayStack, gateway_for
from tests.stack import token

pytestmark = pytest.mark.timeout(60)


class HttpRunner:
    """Plain JSON over HTTP with a runner's token."""

    def __init__(self, session: aiohttp.ClientSession, base: str, handler: str) -> None:
        self.session = session
        self.base = base
        self.handler = handler
        self.runner_id = f"http-runner-{uuid.uuid4().hex[:6]}"

    async def call(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.post(self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def poll(self, wait_seconds: float = 10, **more: Any) -> list[dict[str, Any]]:
        status, body = await self.call(
            "/step-queue/poll",
            {"runner_id": self.runner_id, "handlers": [self.handler], "wait_seconds": wait_seconds}
            | more,
        )
        assert status == 200, body
        attempts: list[dict[str, Any]] = body["attempts"]
        return attempts

    async def report(self, attempt: dict[str, Any], kind: str, body: Any) -> tuple[int, Any]:
        return await self.call(
            attempt["report_urls"][kind], body, {"X-Attempt-Token": attempt["attempt_token"]}
        )


@pytest.fixture
async def runner_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token(RUNNER)}"}
    ) as client:
        yield client


@pytest.fixture
async def http_runner(runner_session: aiohttp.ClientSession, gateway: Gateway) -> HttpRunner:
    runner = HttpRunner(runner_session, gateway.url, f"http-{uuid.uuid4().hex[:8]}")
    # A definition names only handlers some runner offers: this poll offers it (and finds
    # nothing yet).
    assert await runner.poll(wait_seconds=0.1) == []
    return runner


def step(handler: str, **extra: Any) -> dict[str, Any]:
    return {"name": "Sumar Páginas", "handler": handler, "heartbeat_timeout_seconds": 5, **extra}


async def test_an_http_runner_pulls_reports_and_completes_and_a_stale_report_writes_nothing(
    api: Api, http_runner: HttpRunner, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow(step(http_runner.handler))
    execution_id = await api.start(workflow_id, {"pages": [1, 2]})

    (attempt,) = await http_runner.poll()
    assert attempt["execution_id"] == execution_id
    assert (attempt["step_name"], attempt["handler"], attempt["attempt"]) == (
        "Sumar Páginas",
        http_runner.handler,
        1,
    )
    assert attempt["input"]["pages"] == [1, 2]
    assert (attempt["timeout_seconds"], attempt["heartbeat_timeout_seconds"]) == (3600, 5)
    assert attempt["queued_at"].endswith("Z") and attempt["started_at"] >= attempt["queued_at"]
    assert attempt["report_urls"] == {
        "progress": f"/executions/{execution_id}/steps/Sumar%20P%C3%A1ginas/progress",
        "complete": f"/executions/{execution_id}/steps/Sumar%20P%C3%A1ginas/complete",
    }

    status, reply = await http_runner.report(attempt, "progress", {"percentage": 50})
    assert (status, reply["cancel_requested"]) == (200, False)
    status, reply = await http_runner.report(attempt, "complete", {"success": True, "sum": 3})
    assert (status, reply["accepted"]) == (200, True)
    final = await api.wait_terminal(execution_id)
    assert final["status"] == "completed"
    assert final["context"]["dynamic_properties"]["sum"] == 3
    assert final["steps_history"][0]["last_progress"]["percentage"] == 50

    # The attempt is over: its token is stale, and what it reports is refused unwritten.
    before = await gw_stack.client.events(execution_id)
    for kind, body in (("progress", {"percentage": 90}), ("complete", {"success": True})):
        status, reply = await http_runner.report(attempt, kind, body)
        assert (status, reply["error"]["code"]) == (409, "STALE_ATTEMPT"), (kind, reply)
    assert await gw_stack.client.events(execution_id) == before
    # Nothing more to take.
    assert await http_runner.poll(wait_seconds=0.2) == []


async def test_a_cancel_is_told_in_the_progress_reply(api: Api, http_runner: HttpRunner) -> None:
    workflow_id = await api.workflow(step(http_runner.handler))
    execution_id = await api.start(workflow_id)
    (attempt,) = await http_runner.poll()
    status, _ = await api.call("POST", f"/executions/{execution_id}/cancel", {"reason": "stop"})
    assert status == 200
    status, reply = await http_runner.report(attempt, "progress", {"percentage": 60})
    assert (status, reply["cancel_requested"]) == (200, True)
    assert (await api.wait_terminal(execution_id))["status"] == "cancelled"


async def test_an_attempt_taken_by_a_runner_that_disappears_is_retried_after_its_heartbeat(
    api: Api, http_runner: HttpRunner
) -> None:
    workflow_id = await api.workflow(
        step(
            http_runner.handler,
            heartbeat_timeout_seconds=1,
            retry={"max_attempts": 2, "initial_backoff_seconds": 0.1},
        )
    )
    execution_id = await api.start(workflow_id)
    (first,) = await http_runner.poll()
    taken = time.monotonic()
    # This runner vanishes with its attempt; another one polls on.
    (second,) = await http_runner.poll(wait_seconds=15)
    assert time.monotonic() - taken >= 1.0
    assert (second["execution_id"], second["attempt"]) == (execution_id, 2)
    assert second["attempt_token"] != first["attempt_token"]
    status, _ = await http_runner.report(second, "complete", {"success": True})
    assert status == 200
    final = await api.wait_terminal(execution_id)
    assert final["status"] == "completed"
    assert [(h["attempt"], h["status"]) for h in final["steps_history"]] == [
        (1, "timed_out"),
        (2, "success"),
    ]


async def test_a_poll_whose_client_goes_away_ends_at_the_engine_and_takes_nothing(
    api: Api, http_runner: HttpRunner, gw_stack: GatewayStack
) -> None:
    cut_off = asyncio.create_task(http_runner.poll(wait_seconds=30))
    await asyncio.sleep(0.5)  # the poll waits at the engine
    cut_off.cancel()  # the HTTP client closes its connection mid-poll
    await asyncio.gather(cut_off, return_exceptions=True)
    await asyncio.sleep(1.0)  # the gateway notices within 0.2 s and cancels the call

    workflow_id = await api.workflow(step(http_runner.handler))
    execution_id = await api.start(workflow_id)
    await asyncio.sleep(0.5)
    # Had the cut-off poll lived on at the engine, the attempt would have been handed to it.
    queue: sq.GetStepQueueResponse = await gw_stack.client.queue.GetStepQueue(
        sq.GetStepQueueRequest(), timeout=10
    )
    assert [d.ready for d in queue.total if d.handler == http_runner.handler] == [1]
    execution = await gw_stack.client.get(execution_id)
    assert execution.steps_history[0].status == ex_pb.ATTEMPT_STATUS_QUEUED
    # A live poll takes it, first attempt.
    (attempt,) = await http_runner.poll()
    assert (attempt["execution_id"], attempt["attempt"]) == (execution_id, 1)
    await api.call("POST", f"/executions/{execution_id}/cancel")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"handlers": ["h"]}, "runner_id"),
        ({"runner_id": "r", "handlers": []}, "handlers"),
        ({"runner_id": "r", "handlers": "h"}, "handlers"),
        ({"runner_id": "r", "handlers": ["h", ""]}, "handlers[1]"),
        ({"runner_id": "r", "handlers": ["h"], "max_attempts": 0}, "max_attempts"),
        ({"runner_id": "r", "handlers": ["h"], "max_attempts": 101}, "max_attempts"),
        ({"runner_id": "r", "handlers": ["h"], "wait_seconds": 61}, "wait_seconds"),
        ({"runner_id": "r", "handlers": ["h"], "wait_seconds": -1}, "wait_seconds"),
        ({"runner_id": "r", "handlers": ["h"], "slots": 2}, "slots"),
    ],
)
async def test_a_bad_poll_is_422_naming_the_field(
    http_runner: HttpRunner, body: dict[str, Any], field: str
) -> None:
    status, reply = await http_runner.call("/step-queue/poll", body)
    assert status == 422, reply
    assert reply["error"]["details"]["field"] == field


async def test_polling_takes_a_runner_token(api: Api) -> None:
    body = {"runner_id": "r", "handlers": ["h"], "wait_seconds": 0.1}
    status, reply = await api.call("POST", "/step-queue/poll", body)  # an admin's token
    assert (status, reply["error"]["code"]) == (403, "PERMISSION_DENIED")
    status, reply = await api.call(
        "POST", "/step-queue/poll", body, headers={"Authorization": "Bearer nope"}
    )
    assert status == 401
    status, reply = await api.call(
        "POST",
        "/step-queue/poll",
        data=b"{not json",
        headers={"Authorization": f"Bearer {token(RUNNER)}", "Content-Type": "application/json"},
    )
    assert status == 400


async def test_a_long_poll_outlasts_the_unary_deadline(
    runner_session: aiohttp.ClientSession, gw_stack: GatewayStack
) -> None:
    async with gateway_for(gw_stack.engine.port, rpc_timeout_seconds=0.5) as short:
        runner = HttpRunner(runner_session, short.url, f"http-{uuid.uuid4().hex[:8]}")
        started = time.monotonic()
        # Three times the unary deadline: answered empty when the wait ends, not a 504.
        assert await runner.poll(wait_seconds=1.5) == []
        assert time.monotonic() - started >= 1.45
