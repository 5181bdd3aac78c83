"""`discovery queue`, and a step that waits in the step queue as `status` and `watch` show it,
against a real engine whose only runner (pioneer) is stopped for a while."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb

from services.auth import DEFAULT_TENANT
from tests.cli.cli import call_main, run_cli
from tests.cli.conftest import NAP
from tests.stack import Stack, watched


async def queued(stack: Stack, execution_id: str, seconds: float = 10) -> ex_pb.Execution:
    """The execution once its step waits in the queue (nobody polls for it)."""
    deadline = time.monotonic() + seconds
    while True:
        execution = await stack.client.get(execution_id)
        history = execution.steps_history
        if history and history[-1].status == ex_pb.ATTEMPT_STATUS_QUEUED:
            return execution
        if time.monotonic() > deadline:
            raise AssertionError(f"never queued: {execution}")
        await asyncio.sleep(0.05)


@dataclass
class NoRunner:
    """The stack with its pioneer stopped: what is started now waits in the queue."""

    stack: Stack
    resumed: bool = False

    async def resume(self) -> None:
        """The pioneer polls again."""
        if not self.resumed:
            self.resumed = True
            await self.stack.pioneer.start()


@pytest.fixture
async def no_runner(stack: Stack) -> AsyncIterator[NoRunner]:
    """The pioneer is started again at the end, whatever the test did."""
    await stack.pioneer.stop()
    paused = NoRunner(stack)
    try:
        yield paused
    finally:
        await paused.resume()


async def test_queue_lists_the_runners_and_an_empty_queue(
    stack: Stack, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    human = await call_main(capsys, ["--engine", target, "queue"])

    assert human.code == 0, human
    assert "Your tenant  0 steps waiting for a runner" in human.out, human.out
    assert "All tenants  0 steps waiting" in human.out
    assert "Runners  1 runner polled lately" in human.out
    (row,) = [line for line in human.out.splitlines() if stack.pioneer.name in line]
    assert "sleep" in row and " ago" in row, row

    printed = await call_main(capsys, ["--engine", target, "queue", "--json"])
    assert printed.code == 0, printed
    [answer] = printed.json_lines()
    assert answer["tenant"] == [] and answer["total"] == []
    (runner,) = answer["runners"]
    assert runner["runner_id"] == stack.pioneer.name
    assert "sleep" in runner["handlers"] and runner["free_slots"] == stack.pioneer.slots
    assert runner["last_poll_time"].endswith("Z")


async def test_a_queued_step_is_counted_and_shown_waiting_until_a_runner_polls(
    no_runner: NoRunner, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = no_runner.stack
    workflow = await stack.client.create_workflow("siesta", {"name": "nap", **NAP})
    started = await stack.client.start(workflow.workflow_id, {"seconds": 0.2})
    await queued(stack, started.execution_id)
    # Follow it from the start, in a child process, while it waits.
    watching = asyncio.create_task(run_cli(target, "watch", started.execution_id))
    await asyncio.sleep(1.2)

    human = await call_main(capsys, ["--engine", target, "queue"])
    assert human.code == 0, human
    assert "Your tenant  1 step waiting for a runner" in human.out, human.out
    assert "All tenants  1 step waiting" in human.out
    rows = [line.split() for line in human.out.splitlines() if line.lstrip().startswith("sleep")]
    assert len(rows) == 2, human.out  # the tenant's line and the total's
    for row in rows:
        assert row[1] == "1", row
        assert row[3] == "s" and float(row[2]) >= 1.0, row  # "1.3 s": the oldest's wait

    printed = await call_main(capsys, ["--engine", target, "queue", "--json"])
    [answer] = printed.json_lines()
    (mine,) = answer["tenant"]
    assert mine["handler"] == "sleep" and mine["ready"] == 1
    assert mine["tenant"] == DEFAULT_TENANT
    assert mine["oldest_queue_time"].endswith("Z")
    (total,) = answer["total"]
    assert total["ready"] == 1 and total["tenant"] == ""

    status = await call_main(capsys, ["--engine", target, "status", started.execution_id])
    assert status.code == 0, status
    assert "⧗ queued" in status.out and "for a runner" in status.out, status.out
    # The history table's row of the attempt: queued, with its wait, started never.
    (attempt_row,) = [line for line in status.out.splitlines() if "runner of sleep" in line]
    assert "nap" in attempt_row and "⧗ queued" in attempt_row, attempt_row
    assert "running" not in attempt_row and "pending" not in attempt_row

    await watched(stack, started.execution_id)
    await no_runner.resume()
    result = await asyncio.wait_for(watching, 30)

    assert result.code == 0, result
    lines = result.out.splitlines()
    # The snapshot it began from shows the step queued, not pending nor running.
    assert any("⧗ nap" in line and "queued" in line for line in lines), result.out
    started_line = next(line for line in lines if "▶ nap started" in line)
    assert "in the queue" in started_line, started_line
    assert lines[-1].startswith("✓ workflow completed")

    after = await call_main(capsys, ["--engine", target, "queue", "--json"])
    [answer] = after.json_lines()
    assert answer["tenant"] == [] and answer["total"] == []


async def test_watch_from_the_start_shows_the_queued_event(
    no_runner: NoRunner, target: str
) -> None:
    stack = no_runner.stack
    workflow = await stack.client.create_workflow("siesta", {"name": "nap", **NAP})
    started = await stack.client.start(workflow.workflow_id, {"seconds": 0.1})
    await queued(stack, started.execution_id)
    watching = asyncio.create_task(
        run_cli(target, "watch", started.execution_id, "--after-seq", "0")
    )
    await asyncio.sleep(1.2)
    await watched(stack, started.execution_id)
    await no_runner.resume()
    result = await asyncio.wait_for(watching, 30)

    assert result.code == 0, result
    lines = result.out.splitlines()
    kinds = [
        word
        for line in lines
        for word in ("workflow started", "nap queued", "nap started", "nap done")
        if word in line
    ]
    assert kinds == ["workflow started", "nap queued", "nap started", "nap done"], result.out
    assert any("⧗ nap queued for a sleep runner" in line for line in lines), result.out
    started_line = next(line for line in lines if "▶ nap started" in line)
    assert "in the queue" in started_line, started_line

    events = await stack.client.events(started.execution_id, 0)
    assert [e.type for e in events][:3] == [
        ex_pb.EVENT_TYPE_WORKFLOW_STARTED,
        ex_pb.EVENT_TYPE_STEP_QUEUED,
        ex_pb.EVENT_TYPE_STEP_STARTED,
    ]


async def test_run_takes_a_priority_for_the_queue(
    stack: Stack, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await stack.client.create_workflow("prisa", {"name": "nap", **NAP})

    result = await call_main(
        capsys,
        [
            "--engine",
            target,
            "run",
            "prisa",
            "--input",
            '{"seconds": 0}',
            "--priority",
            "1",
            "--json",
        ],
    )

    assert result.code == 0, result
    [execution] = result.json_lines()
    assert execution["priority"] == 1
    shown = await call_main(capsys, ["--engine", target, "status", execution["execution_id"]])
    assert "priority 1" in shown.out, shown.out

    refused = await run_cli(target, "run", "prisa", "--priority", "9")
    assert refused.code == 2 and "--priority" in refused.err, refused
