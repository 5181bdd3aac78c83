"""What one execution may store is bounded: a refused start stores nothing, the status
document stays far under MongoDB's 16 MiB whatever its attempts carried, repeated progress
is logged once, and progress per execution has a limit with a clear refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import bson
import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import step_report_service_pb2 as sr
from pymongo import AsyncMongoClient

from tests.stack import Client, Stack, error_info, running_attempt_token, start_stack


async def _collection(stack: Stack, name: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_uri)
    try:
        return await client[stack.database][name].find().to_list()
    finally:
        await client.close()


async def test_a_refused_input_leaves_no_blob_behind(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("blobs", {"name": "e", "handler": "echo"})
    # One value set apart as a blob, and too much kept inline besides (1 MiB is the limit).
    document = {"document": "A" * 100_000, "pages": ["x" * 60_000] * 20}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await c.start(workflow.workflow_id, document)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input" in (refused.value.details() or "")
    assert await _collection(stack, "blobs") == []
    assert await _collection(stack, "blob_chunks") == []
    assert await _collection(stack, "executions") == []


async def test_the_status_document_stays_small_whatever_the_attempts_carried(
    stack: Stack,
) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "twenty tries",
        {
            "name": "flaky",
            "handler": "fail",
            "retry": {"max_attempts": 20, "initial_backoff_seconds": 0.1, "backoff_multiplier": 1},
        },
    )
    # Nearly a megabyte inline (no value is large enough to be set apart): every attempt's
    # input, copied into the status document, would take it past 16 MiB by the 17th.
    document = {f"part{i}": "x" * 60_000 for i in range(15)}
    started = await c.start(workflow.workflow_id, document)
    # Twenty inputs of a megabyte: more than a client takes in one message by default.
    big = Client(c.target, options=[("grpc.max_receive_message_length", 64 * 2**20)])
    try:
        final = await big.wait_terminal(started.execution_id, 120)
    finally:
        await big.close()
    assert final.status == ex_pb.EXECUTION_STATUS_FAILED

    (doc,) = await _collection(stack, "executions")
    assert doc["last_seq"] == final.last_seq, "the status document caught up with the log"
    assert doc["status"] == "failed" and doc["lease_owner"] is None
    size = len(bson.encode(doc))
    assert size < 3 * 2**20, f"status document of {size} bytes"

    # Every attempt's input is still there to read, from the log.
    attempts = list(final.steps_history)
    assert len(attempts) == 20
    for attempt in attempts:
        assert attempt.input_payload["part14"] == "x" * 60_000


@pytest.fixture
async def few_events_stack(mongo_server: str, database: str) -> AsyncIterator[Stack]:
    stack = await start_stack(mongo_server, database, max_progress_events=5)
    try:
        yield stack
    finally:
        await stack.stop()


def _report(execution_id: str, token: str, percentage: float) -> sr.ReportStepProgressRequest:
    return sr.ReportStepProgressRequest(
        execution_id=execution_id,
        step_name="nap",
        attempt_token=token,
        progress=ex_pb.StepProgress(percentage=percentage, message=f"at {percentage}"),
    )


async def test_repeated_progress_is_logged_once_and_progress_has_a_limit(
    few_events_stack: Stack,
) -> None:
    stack = few_events_stack
    c = stack.client
    await stack.pioneer.stop()  # the test reports for the step itself
    workflow = await c.create_workflow(
        "reported", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 30}
    )
    started = await c.start(workflow.workflow_id, {"seconds": 60})
    await stack.pioneer.start()
    token = await running_attempt_token(stack, started.execution_id)
    await stack.pioneer.stop()  # its own reports would count too
    logged = await _progress_logged(stack, started.execution_id)

    # A report retried with the same values is logged once.
    for _ in range(3):
        await c.reports.ReportStepProgress(_report(started.execution_id, token, 10.0))
    assert await _progress_logged(stack, started.execution_id) == logged + 1

    # Up to the limit of five, then a refusal naming it; heartbeats still count.
    percentage = 10.0
    while logged + 1 < 5:
        percentage += 1
        await c.reports.ReportStepProgress(_report(started.execution_id, token, percentage))
        logged += 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await c.reports.ReportStepProgress(_report(started.execution_id, token, 99.0))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, metadata, _ = error_info(refused.value)
    assert reason == "EVENT_LIMIT_REACHED" and metadata["limit"] == "5"
    await c.reports.ReportStepProgress(
        sr.ReportStepProgressRequest(
            execution_id=started.execution_id, step_name="nap", attempt_token=token
        )
    )
    # The step's completion, with progress of its own, is never refused.
    await c.reports.CompleteStep(
        sr.CompleteStepRequest(
            execution_id=started.execution_id,
            step_name="nap",
            attempt_token=token,
            success=True,
            progress=[ex_pb.StepProgress(percentage=100.0)],
        )
    )
    final = await c.wait_terminal(started.execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert await _progress_logged(stack, started.execution_id) == 5
    await stack.pioneer.start()  # for the fixture's teardown


async def _progress_logged(stack: Stack, execution_id: str) -> int:
    events = await _collection(stack, "events")
    return sum(
        1 for e in events if e["execution_id"] == execution_id and e["type"] == "step_progress"
    )
