"""Steps side by side: a workflow whose steps name the steps they wait for (`after`) runs every
step whose dependencies succeeded at once, within its max_parallel_steps; a real engine, a
real pioneer, SecantusDB."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import workflow_pb2 as wf
from discovery.engine.v1 import workflow_service_pb2 as ws
from google.protobuf import json_format

from services.engine.domain.errors import InvalidArgument
from tests.stack import Client, EngineProcess, Stack, as_dict, error_info, step_successes


def _steps(seconds_step: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A diamond: a, then b and c side by side, then d after both."""
    step = {"handler": "sleep", **(seconds_step or {})}
    return [
        {"name": "a", **step},
        {"name": "b", "after": ["a"], **step},
        {"name": "c", "after": ["a"], **step},
        {"name": "d", "after": ["b", "c"], **step},
    ]


def _window(execution: ex_pb.Execution, name: str) -> tuple[datetime, datetime]:
    """When the step's (successful) attempt ran."""
    (attempt,) = [
        a
        for a in execution.steps_history
        if a.step_name == name and a.status == ex_pb.ATTEMPT_STATUS_SUCCESS
    ]
    return attempt.start_time.ToDatetime(), attempt.finish_time.ToDatetime()


def _started(events: list[ex_pb.ExecutionEvent]) -> Counter[str]:
    return Counter(
        as_dict(e.data)["step"] for e in events if e.type == ex_pb.EVENT_TYPE_STEP_STARTED
    )


async def test_a_diamond_runs_its_branches_at_once(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("diamond", *_steps())
    assert [list(s.after) for s in workflow.steps] == [[], ["a"], ["a"], ["b", "c"]]
    started = await c.start(workflow.workflow_id, {"seconds": 0.8})

    # While the branches run, the status names both, and the lower in order as current.
    while True:
        execution = await c.get(started.execution_id)
        running = [s.name for s in execution.running_steps]
        if running == ["b", "c"] or execution.status != ex_pb.EXECUTION_STATUS_RUNNING:
            break
        await asyncio.sleep(0.05)
    assert running == ["b", "c"]
    assert execution.current_step.name == "b"
    assert [s.order for s in execution.running_steps] == [2, 3]

    final = await c.wait_terminal(started.execution_id, 30)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    a, b, cc, d = (_window(final, name) for name in "abcd")
    assert b[0] < cc[1] and cc[0] < b[1], f"b {b} and c {cc} did not overlap"
    assert b[0] >= a[1] and cc[0] >= a[1], "a branch started before a ended"
    assert d[0] >= max(b[1], cc[1]), "d started before both branches ended"
    assert list(final.running_steps) == []
    assert final.progress.percentage == 100.0

    events = await c.events(started.execution_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert step_successes(events) == {1: 1, 2: 1, 3: 1, 4: 1}


async def test_a_diamond_survives_an_engine_sigkill_mid_branch_with_each_step_run_once(
    restartable: tuple[EngineProcess, Client],
) -> None:
    engine, c = restartable
    workflow = await c.create_workflow("diamond to kill", *_steps())
    started = await c.start(workflow.workflow_id, {"seconds": 2.0})
    while True:
        execution = await c.get(started.execution_id)
        running = [
            a.step_name for a in execution.steps_history if a.status == ex_pb.ATTEMPT_STATUS_RUNNING
        ]
        if sorted(running) == ["b", "c"]:
            break
        assert execution.status == ex_pb.EXECUTION_STATUS_RUNNING
        await asyncio.sleep(0.05)

    engine.kill()
    engine.start()
    final = await c.wait_terminal(started.execution_id, 60)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED, engine.log_tail()

    events = await c.events(started.execution_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The pioneer ran both branches through the engine's restart: each reported to the new
    # engine with its attempt's token, and nothing ran twice.
    assert _started(events) == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert step_successes(events) == {1: 1, 2: 1, 3: 1, 4: 1}
    b, cc = _window(final, "b"), _window(final, "c")
    assert b[0] < cc[1] and cc[0] < b[1]


async def test_no_more_steps_run_at_once_than_the_workflow_allows(stack: Stack) -> None:
    c = stack.client
    definition = [{"name": f"root {i}", "handler": "sleep", "after": []} for i in range(5)]
    definition.append(
        {"name": "join", "handler": "sleep", "after": [f"root {i}" for i in range(5)]}
    )
    workflow = await c.create_workflow("five roots", *definition)
    assert workflow.max_parallel_steps == 10  # the default
    narrow = await _create(c, "five roots, two at once", definition, max_parallel_steps=2)
    started = await c.start(narrow.workflow_id, {"seconds": 0.3})
    final = await c.wait_terminal(started.execution_id, 30)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED

    # Queued or running: from its step_queued to its step_finished.
    live, most = 0, 0
    for event in await c.events(started.execution_id):
        if event.type == ex_pb.EVENT_TYPE_STEP_QUEUED:
            live += 1
            most = max(most, live)
        elif event.type == ex_pb.EVENT_TYPE_STEP_FINISHED:
            live -= 1
    assert most == 2


async def test_a_failed_branch_cancels_the_one_beside_it_and_fails_the_run(
    stack: Stack,
) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "one branch breaks",
        {"name": "slow", "handler": "sleep", "after": []},
        {"name": "broken", "handler": "fail", "after": [], "retry": {"max_attempts": 1}},
        {"name": "after both", "handler": "echo", "after": ["slow", "broken"]},
    )
    started = await c.start(workflow.workflow_id, {"seconds": 30, "message": "down"})
    final = await c.wait_terminal(started.execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_FAILED
    assert final.error.step_name == "broken" and final.error.message == "down"
    statuses = {a.step_name: a.status for a in final.steps_history}
    assert statuses == {
        "slow": ex_pb.ATTEMPT_STATUS_CANCELLED,
        "broken": ex_pb.ATTEMPT_STATUS_FAILED,
    }


@pytest.mark.parametrize(
    ("steps", "field", "words"),
    [
        (
            [{"name": "a", "handler": "echo"}, {"name": "b", "handler": "echo", "after": ["z"]}],
            "steps[1].after",
            "names no step of this workflow: z",
        ),
        (
            [{"name": "a", "handler": "echo", "after": ["a"]}],
            "steps[0].after",
            "waits for itself",
        ),
        (
            [
                {"name": "a", "handler": "echo", "after": ["c"]},
                {"name": "b", "handler": "echo", "after": ["a"]},
                {"name": "c", "handler": "echo", "after": ["b"]},
                {"name": "d", "handler": "echo"},
            ],
            "steps",
            "a -> c -> b -> a",
        ),
    ],
)
async def test_a_graph_that_cannot_run_is_refused_naming_the_steps(
    stack: Stack, steps: list[dict[str, Any]], field: str, words: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.client.create_workflow("cannot run", *steps)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, _, fields = error_info(refused.value)
    assert reason == InvalidArgument.reason
    assert fields == [field]
    assert words in (refused.value.details() or "")


async def _create(c: Client, name: str, steps: list[dict[str, Any]], **more: Any) -> wf.Workflow:
    definition = wf.Workflow(name=name, **more)
    for step in steps:
        json_format.ParseDict(step, definition.steps.add())
    response: ws.CreateWorkflowResponse = await c.workflows.CreateWorkflow(
        ws.CreateWorkflowRequest(workflow=definition), timeout=10
    )
    return response.workflow
