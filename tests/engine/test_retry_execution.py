"""RetryExecution: a failed or cancelled execution goes on from its failed step (or a named
one) in the same execution and log; the steps before it keep their outputs and do not run
again. A real engine and pioneer; the step that fails is run by this test, as a step runner
speaking the step-queue contract (its service was down, then back)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import workflow_pb2 as wf

from services.auth import RUNNER
from tests.stack import Client, Stack, as_dict, authenticated, error_info

FLAKY = "call the service"


class Runner:
    """A step runner of the handler FLAKY, in this test."""

    def __init__(self, c: Client) -> None:
        self.channel = grpc.aio.insecure_channel(c.target, interceptors=authenticated(RUNNER))
        self.queue = sq_grpc.StepQueueServiceStub(self.channel)
        self.reports = c.reports

    async def offer(self) -> None:
        """A workflow names only handlers some runner has offered."""
        await self.take(wait=0.01, expect=False)

    async def take(self, wait: float = 10, *, expect: bool = True) -> sq.StepTask | None:
        answer: sq.PollStepAttemptsResponse = await self.queue.PollStepAttempts(
            sq.PollStepAttemptsRequest(
                runner_id="test-runner", handlers=[FLAKY], max_attempts=1, wait_seconds=wait
            ),
            timeout=wait + 5,
        )
        if not expect:
            assert list(answer.tasks) == []
            return None
        (task,) = answer.tasks
        return task

    async def complete(self, task: sq.StepTask, *, success: bool) -> None:
        request = sr.CompleteStepRequest(
            execution_id=task.execution_id,
            step_name=task.step_name,
            attempt_token=task.attempt_token,
            success=success,
        )
        if success:
            request.result.update({"called": True})
        else:
            request.error.CopyFrom(
                ex_pb.StepError(reason="step_failed", message="the service is down")
            )
        await self.reports.CompleteStep(request, timeout=10)


@pytest.fixture
async def runner(stack: Stack) -> AsyncIterator[Runner]:
    runner = Runner(stack.client)
    await runner.offer()
    try:
        yield runner
    finally:
        await runner.channel.close()


async def _five_steps(c: Client, name: str) -> wf.Workflow:
    echo = {"handler": "echo"}
    return await c.create_workflow(
        name,
        {"name": "one", **echo},
        {"name": "two", **echo},
        {"name": "three", **echo},
        {"name": "four", "handler": FLAKY, "retry": {"max_attempts": 1}},
        {"name": "five", **echo},
    )


async def _failed_at_four(c: Client, runner: Runner, name: str) -> ex_pb.Execution:
    workflow = await _five_steps(c, name)
    started = await c.start(workflow.workflow_id, {"document": "x"})
    task = await runner.take()
    assert task is not None and task.step_name == "four"
    await runner.complete(task, success=False)
    failed = await c.wait_terminal(started.execution_id, 20)
    assert failed.status == ex_pb.EXECUTION_STATUS_FAILED
    assert failed.error.step_name == "four"
    return failed


async def _retry(c: Client, execution_id: str, **kw: Any) -> ex_pb.Execution:
    response: es.RetryExecutionResponse = await c.executions.RetryExecution(
        es.RetryExecutionRequest(execution_id=execution_id, **kw), timeout=10
    )
    return response.execution


def _started(events: list[ex_pb.ExecutionEvent]) -> Counter[str]:
    return Counter(
        as_dict(e.data)["step"] for e in events if e.type == ex_pb.EVENT_TYPE_STEP_STARTED
    )


async def test_a_run_failed_at_step_four_goes_on_from_step_four(
    stack: Stack, runner: Runner
) -> None:
    c = stack.client
    failed = await _failed_at_four(c, runner, "five steps")
    execution_id = failed.execution_id

    # A watcher of the failed run that resumes from where it was sees the run go on.
    watched: list[ex_pb.ExecutionEvent] = []

    async def watch() -> None:
        watched.extend(await c.events(execution_id, failed.last_seq - 1))

    retried = await _retry(c, execution_id, request_id="retry-1")
    watching = asyncio.create_task(watch())
    assert retried.status == ex_pb.EXECUTION_STATUS_RUNNING
    assert retried.retries == 1
    assert retried.execution_id == execution_id
    assert [s.name for s in retried.running_steps] == ["four"]

    task = await runner.take()
    assert task is not None and task.step_name == "four" and task.attempt == 2
    # The step gets what the steps before it gave, as on its first run.
    assert as_dict(task.input)["document"] == "x"
    await runner.complete(task, success=True)
    final = await c.wait_terminal(execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert not final.HasField("error")
    assert as_dict(final.dynamic_properties)["called"] is True

    events = await c.events(execution_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq goes on, gapless"
    kinds = [e.type for e in events]
    assert kinds.count(ex_pb.EVENT_TYPE_WORKFLOW_FAILED) == 1
    retry_event = events[kinds.index(ex_pb.EVENT_TYPE_WORKFLOW_RETRIED)]
    assert as_dict(retry_event.data) == {
        "from_step": "four",
        "steps": ["four", "five"],
        "request_id": "retry-1",
    }
    assert _started(events) == {"one": 1, "two": 1, "three": 1, "four": 2, "five": 1}
    # The first attempt of step four stays in the history.
    fours = [a for a in final.steps_history if a.step_name == "four"]
    assert [(a.attempt, a.status) for a in fours] == [
        (1, ex_pb.ATTEMPT_STATUS_FAILED),
        (2, ex_pb.ATTEMPT_STATUS_SUCCESS),
    ]

    await asyncio.wait_for(watching, 20)
    assert [e.seq for e in watched] == [e.seq for e in events[failed.last_seq - 1 :]]
    assert watched[-1].type == ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED


async def test_the_same_request_id_retries_once(stack: Stack, runner: Runner) -> None:
    c = stack.client
    failed = await _failed_at_four(c, runner, "retried twice")
    first, again = await asyncio.gather(
        _retry(c, failed.execution_id, request_id="same"),
        _retry(c, failed.execution_id, request_id="same"),
    )
    assert first.retries == again.retries == 1
    task = await runner.take()
    assert task is not None
    await runner.complete(task, success=True)
    final = await c.wait_terminal(failed.execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert (await _retry(c, failed.execution_id, request_id="same")).retries == 1
    events = await c.events(failed.execution_id)
    assert [e.type for e in events].count(ex_pb.EVENT_TYPE_WORKFLOW_RETRIED) == 1


async def test_a_retry_from_a_named_step_runs_it_and_every_step_after_it(
    stack: Stack, runner: Runner
) -> None:
    c = stack.client
    failed = await _failed_at_four(c, runner, "from two")
    await _retry(c, failed.execution_id, from_step="two")
    task = await runner.take()
    assert task is not None
    await runner.complete(task, success=True)
    final = await c.wait_terminal(failed.execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    events = await c.events(failed.execution_id)
    assert _started(events) == {"one": 1, "two": 2, "three": 2, "four": 2, "five": 1}


async def test_a_cancelled_run_goes_on_from_the_step_it_was_cancelled_at(
    stack: Stack,
) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "cancelled nap",
        {"name": "first", "handler": "echo"},
        {"name": "nap", "handler": "sleep"},
    )
    started = await c.start(workflow.workflow_id, {"seconds": 30})
    for _ in range(400):
        if (await c.get(started.execution_id)).current_step.name == "nap":
            break
        await asyncio.sleep(0.05)
    await c.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=started.execution_id), timeout=10
    )
    assert (await c.wait_terminal(started.execution_id)).status == (
        ex_pb.EXECUTION_STATUS_CANCELLED
    )
    retried = await _retry(c, started.execution_id)
    assert [s.name for s in retried.running_steps] == ["nap"]
    assert retried.current_step.name == "nap"
    await c.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=started.execution_id), timeout=10
    )
    events = await c.events(started.execution_id)
    assert _started(events)["first"] == 1
    assert [e.type for e in events].count(ex_pb.EVENT_TYPE_WORKFLOW_CANCELLED) == 2


async def test_what_cannot_be_retried_is_refused_saying_why(stack: Stack, runner: Runner) -> None:
    c = stack.client
    workflow = await c.create_workflow("done", {"name": "only", "handler": "echo"})
    started = await c.start(workflow.workflow_id, {})
    assert (await c.wait_terminal(started.execution_id)).status == (
        ex_pb.EXECUTION_STATUS_COMPLETED
    )
    with pytest.raises(grpc.aio.AioRpcError) as completed:
        await _retry(c, started.execution_id)
    assert completed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(completed.value)[0] == "EXECUTION_NOT_RETRYABLE"
    assert "completed" in (completed.value.details() or "")

    failed = await _failed_at_four(c, runner, "bad step name")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _retry(c, failed.execution_id, from_step="six")
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(unknown.value)[2] == ["from_step"]
    assert (await c.get(failed.execution_id)).status == ex_pb.EXECUTION_STATUS_FAILED

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _retry(c, "no-such-execution")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
