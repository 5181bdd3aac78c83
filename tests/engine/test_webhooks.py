"""The engine pushing attempts to an HTTP step runner (services/engine/webhook_runner.py), against a
real HTTP server on a real port that plays the runner: what it serves, what it answers, and
whether it is there at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import web
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_report_service_pb2 as sr

from discovery_client.requests import struct
from services.engine.app import Engine
from services.engine.config import Settings, webhook_urls
from services.engine.webhook_contract import (
    MAX_CONCURRENT_CAP,
    Offer,
    RunnerUnavailable,
    parse_offer,
)
from services.envconfig import ConfigError
from tests.stack import KEY_FILES, Stack, free_port, start_stack, wait_for_runner

HANDLER = "hook"


@dataclass
class HookRunner:
    """An HTTP step runner that accepts attempts and does nothing with them: the test
    reports for it. `answers` are the statuses of the next POSTs (202 once they run out)."""

    port: int
    max_concurrent: int = 4
    answers: list[int] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    received: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/handlers", self._handlers)
        app.router.add_post("/v1/attempts", self._attempts)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handlers(self, request: web.Request) -> web.Response:
        return web.json_response({"handlers": [HANDLER], "max_concurrent": self.max_concurrent})

    async def _attempts(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.posts.append(body)
        status = self.answers.pop(0) if self.answers else 202
        if status == 202:
            self.received.put_nowait(body)
            return web.json_response({"accepted": True}, status=202)
        return web.json_response({"error": f"answering {status}"}, status=status)

    async def next(self, seconds: float = 15) -> dict[str, Any]:
        return await asyncio.wait_for(self.received.get(), seconds)


@pytest.fixture
async def hook() -> AsyncIterator[HookRunner]:
    runner = HookRunner(free_port())
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


@pytest.fixture
async def pushing(mongo_server: str, database: str, hook: HookRunner) -> AsyncIterator[Stack]:
    stack = await start_stack(
        mongo_server,
        database,
        webhook_urls=(hook.url,),
        report_base_url="http://gateway.example:8080/",
    )
    try:
        await wait_for_runner(stack.client.queue, f"webhook:{hook.url}")
        yield stack
    finally:
        await stack.stop()


async def _workflow(stack: Stack, **step: Any) -> str:
    workflow = await stack.client.create_workflow(
        f"hooked-{time.monotonic_ns()}",
        {"name": "remote", "handler": HANDLER, "heartbeat_timeout_seconds": 30, **step},
    )
    return workflow.workflow_id


async def _complete(stack: Stack, attempt: dict[str, Any], output: dict[str, Any]) -> None:
    await stack.client.reports.CompleteStep(
        sr.CompleteStepRequest(
            execution_id=attempt["execution_id"],
            step_name=attempt["step_name"],
            attempt_token=attempt["attempt_token"],
            success=True,
            result=struct(output),
        ),
        timeout=10,
    )


async def test_the_attempt_json_is_what_an_http_runner_reads(
    pushing: Stack, hook: HookRunner
) -> None:
    workflow_id = await _workflow(pushing, timeout_seconds=120)
    started = await pushing.client.start(workflow_id, {"nombre_documento": "a.pdf"})
    attempt = await hook.next()
    assert set(attempt) == {
        "execution_id",
        "step_name",
        "handler",
        "attempt",
        "attempt_token",
        "input",
        "timeout_seconds",
        "heartbeat_timeout_seconds",
        "queued_at",
        "started_at",
        "deadline",
        "report_urls",
    }
    assert attempt["execution_id"] == started.execution_id
    assert (attempt["step_name"], attempt["handler"], attempt["attempt"]) == ("remote", HANDLER, 1)
    assert attempt["input"]["nombre_documento"] == "a.pdf"
    assert attempt["timeout_seconds"] == 120 and attempt["heartbeat_timeout_seconds"] == 30
    assert attempt["deadline"].endswith("Z") and attempt["deadline"] > attempt["started_at"]
    base = f"http://gateway.example:8080/executions/{started.execution_id}/steps/remote"
    assert attempt["report_urls"] == {
        "progress": f"{base}/progress",
        "complete": f"{base}/complete",
    }
    await _complete(pushing, attempt, {"ok": True})
    final = await pushing.client.wait_terminal(started.execution_id)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert final.steps_history[0].runner_id == f"webhook:{hook.url}"


async def test_work_waits_while_the_runner_is_down_and_failed_posts_are_sent_again(
    pushing: Stack, hook: HookRunner
) -> None:
    workflow_id = await _workflow(pushing)
    await hook.stop()
    # Taken while the runner looked up: its POST fails, and is sent again while it lives.
    first = await pushing.client.start(workflow_id)
    await _until(pushing, first.execution_id, ex_pb.ATTEMPT_STATUS_RUNNING)
    webhook = pushing.engine.webhooks[0]
    async with asyncio.timeout(10):
        while webhook.offer is not None:  # noqa: ASYNC110 - it has no event for this
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # past the poll that may have been open then (1 s at most)
    # The pusher now knows the runner is away: it takes nothing, and nothing fails.
    second = await pushing.client.start(workflow_id)
    await asyncio.sleep(2.0)
    waiting = await pushing.client.get(second.execution_id)
    assert [a.status for a in waiting.steps_history] == [ex_pb.ATTEMPT_STATUS_QUEUED]
    running = await pushing.client.get(first.execution_id)
    assert [a.status for a in running.steps_history] == [ex_pb.ATTEMPT_STATUS_RUNNING]
    assert hook.posts == []

    # Back, but busy at first: 503, then 429, then both are accepted.
    hook.answers = [503, 429]
    await hook.start()
    delivered = {a["execution_id"]: a for a in [await hook.next(), await hook.next()]}
    assert set(delivered) == {first.execution_id, second.execution_id}
    assert len(hook.posts) == 4
    for attempt in delivered.values():
        assert attempt["attempt"] == 1
        await _complete(pushing, attempt, {"delivered": "late"})
    for execution_id in delivered:
        final = await pushing.client.wait_terminal(execution_id)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
        assert [a.status for a in final.steps_history] == [ex_pb.ATTEMPT_STATUS_SUCCESS]


async def _until(stack: Stack, execution_id: str, status: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while True:
        execution = await stack.client.get(execution_id)
        if execution.steps_history and execution.steps_history[-1].status == status:
            return
        assert time.monotonic() < deadline, f"attempt still {execution.steps_history}"
        await asyncio.sleep(0.05)


async def test_an_attempt_the_runner_refuses_fails_and_the_retry_policy_applies(
    pushing: Stack, hook: HookRunner
) -> None:
    workflow_id = await _workflow(
        pushing, retry={"max_attempts": 2, "initial_backoff_seconds": 0.1}
    )
    hook.answers = [400, 400]
    started = await pushing.client.start(workflow_id)
    final = await pushing.client.wait_terminal(started.execution_id, 30)
    assert final.status == ex_pb.EXECUTION_STATUS_FAILED
    assert [a.status for a in final.steps_history] == [ex_pb.ATTEMPT_STATUS_FAILED] * 2
    error = final.steps_history[0].error
    assert error.reason == "runner_refused" and error.type == "HTTP 400"
    assert "HTTP 400" in error.message and "answering 400" in error.message
    assert len(hook.posts) == 2  # refused for good: not sent again


async def test_no_more_attempts_in_flight_than_the_runner_says_it_runs(
    pushing: Stack, hook: HookRunner
) -> None:
    assert hook.max_concurrent == 4
    workflow_id = await _workflow(pushing)
    started = [await pushing.client.start(workflow_id) for _ in range(6)]
    first = [await hook.next() for _ in range(4)]
    await asyncio.sleep(1.0)
    assert hook.received.empty() and len(hook.posts) == 4
    # One ends by completing, one by a cancel: each frees a slot.
    await _complete(pushing, first[0], {})
    await pushing.client.executions.CancelExecution(_cancel(first[1]["execution_id"]), timeout=10)
    later = [await hook.next() for _ in range(2)]
    assert {a["execution_id"] for a in first + later} == {s.execution_id for s in started}
    for attempt in [*first[2:], *later]:
        await _complete(pushing, attempt, {})


def _cancel(execution_id: str) -> es.CancelExecutionRequest:
    return es.CancelExecutionRequest(execution_id=execution_id)


def test_push_is_chosen_by_the_urls_scheme() -> None:
    secret = KEY_FILES
    assert webhook_urls({"PIONEER_URL": "http://localhost:8000"}) == ("http://localhost:8000",)
    # A gRPC host:port is a runner that pulls: nothing to push to.
    assert webhook_urls({"PIONEER_URL": "localhost:50052"}) == ()
    assert webhook_urls(
        {"PIONEER_URLS": "http://a:1/, https://b, c:3", "PIONEER_URL": "http://ignored"}
    ) == ("http://a:1", "https://b")
    settings = Settings.from_env({**secret, "PIONEER_URL": "https://runner.example/hooks"})
    assert settings.webhook_urls == ("https://runner.example/hooks",)
    assert settings.report_base_url == "http://localhost:8080"
    with pytest.raises(ConfigError, match=r"^ENGINE_REPORT_BASE_URL="):
        Settings.from_env({**secret, "ENGINE_REPORT_BASE_URL": "gateway:8080"})
    with pytest.raises(ConfigError, match=r"^PIONEER_URL="):
        Settings.from_env({**secret, "PIONEER_URL": "http://"})
    with pytest.raises(ConfigError, match=r"^PIONEER_URLS: a URL with credentials"):
        Settings.from_env({**secret, "PIONEER_URLS": "http://user:secret@runner:8000"})


async def test_a_pushed_attempt_that_goes_quiet_times_out_and_is_retried_with_a_new_token(
    pushing: Stack, hook: HookRunner
) -> None:
    workflow_id = await _workflow(
        pushing,
        heartbeat_timeout_seconds=1,
        retry={"max_attempts": 2, "initial_backoff_seconds": 0.1},
    )
    started = await pushing.client.start(workflow_id)
    quiet = await hook.next()
    # It never reports: the heartbeat timeout ends it, its slot frees, attempt 2 is pushed.
    second = await hook.next()
    assert (second["attempt"], second["execution_id"]) == (2, started.execution_id)
    assert second["attempt_token"] != quiet["attempt_token"]
    late = sr.ReportStepProgressRequest(
        execution_id=started.execution_id,
        step_name="remote",
        attempt_token=quiet["attempt_token"],
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await pushing.client.reports.ReportStepProgress(late, timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await _complete(pushing, second, {"second": True})
    final = await pushing.client.wait_terminal(started.execution_id)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert final.steps_history[0].error.reason == "heartbeat_timeout"
    assert [a.status for a in final.steps_history] == [
        ex_pb.ATTEMPT_STATUS_TIMED_OUT,
        ex_pb.ATTEMPT_STATUS_SUCCESS,
    ]
    webhook = pushing.engine.webhooks[0]
    assert webhook.in_flight == 0


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"handlers": "hook", "max_concurrent": 1},
        {"handlers": ["hook", 3], "max_concurrent": 1},
        {"handlers": [""], "max_concurrent": 1},
        {"handlers": ["hook"]},
        {"handlers": ["hook"], "max_concurrent": 0},
        {"handlers": ["hook"], "max_concurrent": True},
        {"handlers": ["hook"], "max_concurrent": 2.5},
    ],
)
def test_a_handler_list_out_of_contract_is_the_runner_being_unavailable(answer: Any) -> None:
    with pytest.raises(RunnerUnavailable, match="GET /v1/handlers"):
        parse_offer(answer)


def test_a_runner_is_never_handed_more_than_the_cap() -> None:
    offer = parse_offer({"handlers": ["a", "b"], "max_concurrent": 10**9, "extra": 1})
    assert offer == Offer(frozenset({"a", "b"}), MAX_CONCURRENT_CAP)


async def test_a_restarted_engine_counts_and_sends_again_what_its_runner_took(
    mongo_server: str, database: str, hook: HookRunner
) -> None:
    """The engine may stop between a take and its POST: after a restart the attempts the
    runner took and that still run are sent again (the runner answers 202 to a token it has)
    and count against its slots."""
    stack = await start_stack(mongo_server, database, webhook_urls=(hook.url,))
    engine: Engine | None = None
    try:
        await wait_for_runner(stack.client.queue, f"webhook:{hook.url}")
        started = await stack.client.start(await _workflow(stack))
        first = await hook.next()
        await stack.engine.stop(grace=0)
        engine = Engine(stack.engine.settings)
        await engine.start()
        again = await hook.next()
        assert again["attempt_token"] == first["attempt_token"] and again["attempt"] == 1
        assert engine.webhooks[0].in_flight == 1
        await _complete(stack, again, {"after": "restart"})
        final = await stack.client.wait_terminal(started.execution_id)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
        assert engine.webhooks[0].in_flight == 0
    finally:
        await stack.client.close()
        if engine is not None:
            await engine.stop(grace=0)
        await stack.pioneer.stop()
