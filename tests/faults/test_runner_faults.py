"""Faults between the engine and pioneer: a paused runner, an engine down while a step runs."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb

from tests.stack import (
    Client,
    EngineProcess,
    Pioneer,
    PioneerProcess,
    engine_process_env,
    free_port,
    restartable_engine,
    wait_for_runner,
    wait_serving,
)

# Pioneer #1 runs one step at a time: once it has taken the attempt it has no free slot, so
# no poll of its is open when it is paused. (A paused runner's open long poll would take the
# retry too, as any runner the engine cannot tell from a live one.)
FIRST_PIONEER_SLOTS = 1


@pytest.fixture
async def engine_and_paused_pioneer(
    mongo_server: str, database: str, tmp_path: Path
) -> AsyncIterator[tuple[PioneerProcess, str, Pioneer, Client]]:
    """One engine (a child); pioneer #1 a child process (so that it can be paused), already
    polling; pioneer #2 in this process, not started yet."""
    engine_port = free_port()
    engine = EngineProcess(
        engine_process_env(mongo_server, database, engine_port), tmp_path / "engine.log"
    )
    engine.start()
    client = Client(f"127.0.0.1:{engine_port}")
    first = PioneerProcess(
        {
            "PIONEER_PORT": str(free_port()),
            "DISCOVERY_URL": f"127.0.0.1:{engine_port}",
            "PIONEER_MAX_CONCURRENT_STEPS": str(FIRST_PIONEER_SLOTS),
        },
        tmp_path / "pioneer-1.log",
    )
    second = Pioneer(engine_port, name="test-pioneer-2")
    try:
        await wait_serving(client.target)
        first.start()
        first_id = first.runner_id
        await wait_for_runner(client.queue, first_id, explain=first.log_tail)
        yield first, first_id, second, client
    finally:
        await client.close()
        if first.process is not None:
            first.process.send_signal(signal.SIGCONT)
        engine.stop()
        first.stop()
        if second.runner is not None:
            await second.stop()


async def test_a_paused_runner_is_replaced_and_its_late_reports_refused(
    engine_and_paused_pioneer: tuple[PioneerProcess, str, Pioneer, Client], tmp_path: Path
) -> None:
    first, first_id, second, c = engine_and_paused_pioneer
    workflow = await c.create_workflow(
        "pause",
        {
            "name": "nap",
            "handler": "sleep",
            "heartbeat_timeout_seconds": 1.5,
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 0.1},
        },
    )
    # Pioneer #1 is the only runner: it takes attempt 1. Wait until it runs it there (its
    # progress reports arrive), so that it holds its only slot and polls no more.
    started = await c.start(workflow.workflow_id, {"seconds": 3})
    for _ in range(100):
        current = (await c.get(started.execution_id)).steps_history
        if (
            current
            and current[-1].status == ex_pb.ATTEMPT_STATUS_RUNNING
            and current[-1].last_progress.percentage > 0
        ):
            break
        await asyncio.sleep(0.05)
    assert [(a.attempt, a.status, a.runner_id) for a in current] == [
        (1, ex_pb.ATTEMPT_STATUS_RUNNING, first_id)
    ], "attempt 1 did not run on pioneer #1"
    assert current[-1].last_progress.percentage > 0
    # Pioneer #2 joins, and waits for work.
    await second.start()
    await wait_for_runner(c.queue, second.name)
    assert second.runner is not None
    assert second.runner.running_count == 0
    assert first.process is not None
    first.process.send_signal(signal.SIGSTOP)
    paused_at = time.monotonic()

    # The heartbeat stops; the engine times the attempt out and pioneer #2 takes attempt 2.
    for _ in range(100):
        if second.runner.running_count:
            break
        await asyncio.sleep(0.1)
    rescheduled_after = time.monotonic() - paused_at
    assert second.runner.running_count == 1
    first.process.send_signal(signal.SIGCONT)

    final = await c.wait_terminal(started.execution_id, 30)
    print(
        f"\npaused runner: attempt 2 running on the other pioneer {rescheduled_after:.2f} s "
        "after the pause (heartbeat timeout 1.5 s)"
    )
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert [(a.status, a.runner_id) for a in final.steps_history] == [
        (ex_pb.ATTEMPT_STATUS_TIMED_OUT, first_id),
        (ex_pb.ATTEMPT_STATUS_SUCCESS, second.name),
    ]
    assert final.steps_history[0].error.reason == "heartbeat_timeout"
    assert rescheduled_after < 1.5 + 1.0 + 0.5
    events = await c.events(started.execution_id, 0)
    finished = [e for e in events if e.type == ex_pb.EVENT_TYPE_STEP_FINISHED]
    assert len(finished) == 2
    # Pioneer #1 woke up to a stale refusal of its next report (the engine no longer tells a
    # runner anything but in the reply to its reports): its attempt stopped and wrote nothing.
    await asyncio.sleep(1.0)
    log = (tmp_path / "pioneer-1.log").read_text()
    assert "stale" in log.lower() or '"reason": "cancelled"' in log
    assert [e.seq for e in await c.events(started.execution_id, 0)] == [e.seq for e in events]
    assert first.process.poll() is None, "pioneer #1 did not survive its pause"


async def test_a_step_finishing_while_the_engine_is_down_keeps_its_completion(
    mongo_server: str, database: str, tmp_path: Path
) -> None:
    async with restartable_engine(mongo_server, database, tmp_path / "engine.log") as (
        pioneer,
        engine,
        c,
    ):
        workflow = await c.create_workflow(
            "outage", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
        )
        started = await c.start(workflow.workflow_id, {"seconds": 1.5})
        await asyncio.sleep(0.5)
        engine.kill()
        # Down longer than pioneer's progress retry budget (5 s): the step's progress reports
        # are dropped, the step still ends, and pioneer keeps retrying its completion.
        await asyncio.sleep(6.0)
        engine.start()
        await wait_serving(c.target)
        final = await c.wait_terminal(started.execution_id, 20)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
        assert [(a.attempt, a.status, a.runner_id) for a in final.steps_history] == [
            (1, ex_pb.ATTEMPT_STATUS_SUCCESS, pioneer.name)
        ]
