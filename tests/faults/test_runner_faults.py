"""Faults between the engine and pioneer: a paused runner, an engine down while a step runs."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es

from tests.stack import (
    Client,
    EngineProcess,
    Pioneer,
    PioneerProcess,
    engine_process_env,
    free_port,
    wait_serving,
)


@pytest.fixture
def engine_port() -> int:
    return free_port()


@pytest.fixture
async def two_pioneers(
    mongo_server: str, database: str, engine_port: int, tmp_path: Path
) -> AsyncIterator[tuple[PioneerProcess, Pioneer, Client]]:
    """Pioneer #1 a child process (so it can be paused), #2 in this process; one engine."""
    first_port = free_port()
    first = PioneerProcess(
        {"PIONEER_PORT": str(first_port), "DISCOVERY_URL": f"127.0.0.1:{engine_port}"},
        tmp_path / "pioneer-1.log",
    )
    first.start()
    second = Pioneer(engine_port)
    await second.start()
    engine = EngineProcess(
        engine_process_env(
            mongo_server, database, engine_port, f"127.0.0.1:{first_port},127.0.0.1:{second.port}"
        ),
        tmp_path / "engine.log",
    )
    engine.start()
    client = Client(f"127.0.0.1:{engine_port}")
    try:
        await wait_serving(client.target)
        await wait_serving(f"127.0.0.1:{first_port}")
        yield first, second, client
    finally:
        await client.close()
        if first.process is not None:
            first.process.send_signal(signal.SIGCONT)
        engine.stop()
        first.stop()
        await second.stop()


async def test_a_paused_runner_is_replaced_and_its_late_reports_refused(
    two_pioneers: tuple[PioneerProcess, Pioneer, Client], tmp_path: Path
) -> None:
    first, second, c = two_pioneers
    workflow = await c.create_workflow(
        "pause",
        {
            "name": "nap",
            "handler": "sleep",
            "heartbeat_timeout_seconds": 1.5,
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 0.1},
        },
    )
    assert second.runner is not None
    # Round-robin: find an execution whose first attempt went to pioneer #1 (the child).
    for _ in range(4):
        started = await c.start(workflow.workflow_id, {"seconds": 3})
        await asyncio.sleep(0.3)
        if second.runner.running_count == 0:
            break
        await c.executions.CancelExecution(
            es.CancelExecutionRequest(execution_id=started.execution_id)
        )
    assert second.runner.running_count == 0, "no attempt reached pioneer #1"
    assert first.process is not None
    first.process.send_signal(signal.SIGSTOP)
    paused_at = time.monotonic()

    # The heartbeat stops; the engine times the attempt out and pioneer #2 runs attempt 2.
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
    assert [a.status for a in final.steps_history] == [
        ex_pb.ATTEMPT_STATUS_TIMED_OUT,
        ex_pb.ATTEMPT_STATUS_SUCCESS,
    ]
    assert final.steps_history[0].error.reason == "heartbeat_timeout"
    assert rescheduled_after < 1.5 + 1.0 + 0.5
    events = await c.events(started.execution_id, 0)
    finished = [e for e in events if e.type == ex_pb.EVENT_TYPE_STEP_FINISHED]
    assert len(finished) == 2
    # Pioneer #1 woke up to the engine's CancelStep or a stale refusal of its next report;
    # either way its attempt stopped and wrote nothing.
    await asyncio.sleep(1.0)
    log = (tmp_path / "pioneer-1.log").read_text()
    assert "stale" in log.lower() or '"reason": "cancelled"' in log
    assert [e.seq for e in await c.events(started.execution_id, 0)] == [e.seq for e in events]


async def test_a_step_finishing_while_the_engine_is_down_keeps_its_completion(
    mongo_server: str, database: str, engine_port: int, tmp_path: Path
) -> None:
    pioneer = Pioneer(engine_port)
    await pioneer.start()
    engine = EngineProcess(
        engine_process_env(mongo_server, database, engine_port, f"127.0.0.1:{pioneer.port}"),
        tmp_path / "engine.log",
    )
    engine.start()
    c = Client(f"127.0.0.1:{engine_port}")
    try:
        await wait_serving(c.target)
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
        assert [(a.attempt, a.status) for a in final.steps_history] == [
            (1, ex_pb.ATTEMPT_STATUS_SUCCESS)
        ]
    finally:
        await c.close()
        engine.stop()
        await pioneer.stop()
