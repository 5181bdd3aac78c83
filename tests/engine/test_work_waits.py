"""More work than runners: it waits in the step queue and completes, fairly across tenants.

Scaled down for `make test`; `python -m tests.benchmarks.burst` runs the full 500-run burst
against the engine from before the queue, in one run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import step_queue_service_pb2 as sq

from services.auth import ADMIN
from tests.stack import Client, Pioneer, Stack, start_stack, token, wait_for_runner

SLOTS = 8


@pytest.fixture
async def small_pioneer(mongo_server: str, database: str) -> AsyncIterator[Stack]:
    stack = await start_stack(mongo_server, database, pioneer_slots=SLOTS, start_burst=1000)
    try:
        yield stack
    finally:
        await stack.stop()


async def start_many(c: Client, workflow_id: str, count: int, seconds: float) -> list[str]:
    started = await asyncio.gather(
        *(c.start(workflow_id, {"seconds": seconds}) for _ in range(count))
    )
    return [s.execution_id for s in started]


def waited(attempt: ex_pb.StepAttempt) -> float:
    return (attempt.start_time.ToDatetime() - attempt.queue_time.ToDatetime()).total_seconds()


async def test_a_burst_bigger_than_the_runners_waits_and_completes_without_retries(
    small_pioneer: Stack,
) -> None:
    c = small_pioneer.client
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 5}
    workflow = await c.create_workflow(
        "burst", {"name": "a", **step}, {"name": "b", **step}, {"name": "c", **step}
    )
    began = time.monotonic()
    ids = await start_many(c, workflow.workflow_id, 60, 0.05)
    finals = [await c.wait_terminal(i, 120) for i in ids]
    elapsed = time.monotonic() - began
    assert [f.status for f in finals] == [ex_pb.EXECUTION_STATUS_COMPLETED] * len(ids)
    attempts = [a for f in finals for a in f.steps_history]
    assert len(attempts) == 3 * len(ids), "an attempt was retried for lack of a runner"
    assert {a.attempt for a in attempts} == {1}
    longest = max(waited(a) for a in attempts)
    print(
        f"\nburst: {len(ids)} runs x 3 steps on {SLOTS} slots in {elapsed:.1f} s, "
        f"longest queue wait {longest:.2f} s"
    )
    assert longest > 0.1, "the burst never had to wait: it tests nothing"


async def test_runs_wait_while_the_only_runner_is_gone_then_complete(small_pioneer: Stack) -> None:
    c = small_pioneer.client
    workflow = await c.create_workflow(
        "outage",
        {
            "name": "nap",
            "handler": "sleep",
            "heartbeat_timeout_seconds": 1,
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 0.1},
        },
    )
    ids = await start_many(c, workflow.workflow_id, 40, 0.3)
    await asyncio.sleep(0.5)
    await small_pioneer.pioneer.stop()  # its running steps are abandoned, the rest wait
    await asyncio.sleep(3)  # three heartbeat timeouts: waiting in the queue is not one
    await small_pioneer.pioneer.start()
    finals = [await c.wait_terminal(i, 120) for i in ids]
    assert [f.status for f in finals] == [ex_pb.EXECUTION_STATUS_COMPLETED] * len(ids)
    retried = [f for f in finals if len(f.steps_history) > 1]
    # Only what the runner held when it went away was retried, never a queued attempt.
    assert len(retried) <= SLOTS
    for final in retried:
        assert final.steps_history[0].status == ex_pb.ATTEMPT_STATUS_TIMED_OUT
        assert final.steps_history[0].error.reason == "heartbeat_timeout"
    assert max(waited(f.steps_history[-1]) for f in finals) >= 3


async def test_a_runner_that_joins_mid_burst_takes_work_at_once(small_pioneer: Stack) -> None:
    c = small_pioneer.client
    workflow = await c.create_workflow(
        "join", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
    )
    ids = await start_many(c, workflow.workflow_id, 40, 0.5)
    second = Pioneer(small_pioneer.engine.port, slots=4, name="second-pioneer")
    joined = time.monotonic()
    await second.start()
    try:
        assert second.runner is not None
        while second.runner.running_count == 0:
            assert time.monotonic() - joined < 2, "the new runner got no work"
            await asyncio.sleep(0.01)
        print(f"\nnew runner running a step {time.monotonic() - joined:.2f} s after it started")
        finals = [await c.wait_terminal(i, 120) for i in ids]
    finally:
        await second.stop()
    assert all(f.status == ex_pb.EXECUTION_STATUS_COMPLETED for f in finals)
    runners = {a.runner_id for f in finals for a in f.steps_history}
    assert runners == {"test-pioneer", "second-pioneer"}


async def test_one_tenants_backlog_does_not_starve_another(small_pioneer: Stack) -> None:
    a = small_pioneer.client
    b = Client(a.target, token(ADMIN, tenant="tenant-b"))
    try:
        step = {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
        mine = await a.create_workflow("backlog", step)
        theirs = await b.create_workflow("single", step)
        ids = await start_many(a, mine.workflow_id, 80, 0.4)
        while True:
            queue = await a.queue.GetStepQueue(sq.GetStepQueueRequest(), timeout=5)
            if sum(d.ready for d in queue.tenant) >= 40:
                break
            await asyncio.sleep(0.05)
        single = await b.start(theirs.workflow_id, {"seconds": 0.1})
        final = await b.wait_terminal(single.execution_id, 60)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
        (attempt,) = final.steps_history
        queued_at, started_at = attempt.queue_time.ToDatetime(), attempt.start_time.ToDatetime()
        overtaken = 0
        for execution_id in ids:
            for other in (await a.get(execution_id)).steps_history:
                if other.HasField("start_time"):
                    start = other.start_time.ToDatetime()
                    overtaken += queued_at < start < started_at
        print(
            f"\nfairness: tenant B's step waited {waited(attempt):.2f} s behind a backlog of "
            f"{len(ids)}; {overtaken} of tenant A's steps started meanwhile ({SLOTS} slots)"
        )
        assert overtaken < 2 * SLOTS
    finally:
        await b.close()


async def test_the_queue_listing_shows_depth_and_runners(small_pioneer: Stack) -> None:
    c = small_pioneer.client
    workflow = await c.create_workflow(
        "listed", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
    )
    await small_pioneer.pioneer.stop()
    try:
        await start_many(c, workflow.workflow_id, 3, 0.1)
        queue = await c.queue.GetStepQueue(sq.GetStepQueueRequest(), timeout=5)
        assert [(d.handler, d.tenant, d.ready) for d in queue.tenant] == [("sleep", "default", 3)]
        assert [(d.handler, d.tenant, d.ready) for d in queue.total] == [("sleep", "", 3)]
        assert queue.tenant[0].HasField("oldest_queue_time")
        assert "test-pioneer" in {r.runner_id for r in queue.runners}
        other = Client(c.target, token(ADMIN, tenant="elsewhere"))
        try:
            theirs = await other.queue.GetStepQueue(sq.GetStepQueueRequest(), timeout=5)
        finally:
            await other.close()
        assert list(theirs.tenant) == [], "another tenant's queue is not shown by name"
        assert [d.ready for d in theirs.total] == [3]
    finally:
        await small_pioneer.pioneer.start()
        await wait_for_runner(c.queue, small_pioneer.pioneer.name)
