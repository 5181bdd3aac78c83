"""The engine's own limits: message size, load shedding and per-principal rates, with the
server still serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_report_service_pb2 as sr

from tests.stack import Client, Stack, error_info, running_attempt_token, start_stack, token


@pytest.fixture
async def small_stack(mongo_server: str, database: str) -> AsyncIterator[Stack]:
    stack = await start_stack(
        mongo_server, database, max_message_bytes=1024 * 1024, max_concurrent_rpcs=3
    )
    try:
        yield stack
    finally:
        await stack.stop()


async def test_oversized_message_is_refused_and_the_server_goes_on(small_stack: Stack) -> None:
    c = small_stack.client
    workflow = await c.create_workflow("big", {"name": "e", "handler": "echo"})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await c.start(workflow.workflow_id, {"base64": "A" * (2 * 1024 * 1024)})
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    listed = await c.executions.ListExecutions(es.ListExecutionsRequest())
    assert list(listed.executions) == [], "nothing was stored"
    assert (await c.start(workflow.workflow_id, {"small": True})).execution_id


async def test_calls_over_the_concurrency_cap_are_shed_at_once(small_stack: Stack) -> None:
    c = small_stack.client
    workflow = await c.create_workflow(
        "held", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
    )
    started = await c.start(workflow.workflow_id, {"seconds": 5})
    # The pioneer's long poll would hold one of the three slots while it waits for work.
    await small_stack.pioneer.stop()
    streams = [
        c.executions.WatchExecution(es.WatchExecutionRequest(execution_id=started.execution_id))
        for _ in range(3)
    ]
    try:
        for stream in streams:
            await stream.read()  # the snapshot: each stream now holds one of the three slots
        began = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as shed:
            await c.get(started.execution_id)
        assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - began < 0.5
    finally:
        for stream in streams:
            stream.cancel()
    await asyncio.sleep(0.2)
    assert (await c.get(started.execution_id)).execution_id == started.execution_id
    await small_stack.pioneer.start()  # for the fixture's teardown


async def test_a_tenant_starting_too_fast_is_told_when_to_retry_and_others_go_on(
    mongo_server: str, database: str
) -> None:
    stack = await start_stack(mongo_server, database, start_rate=1.0, start_burst=2)
    other = Client(stack.client.target, token(tenant="other"))
    try:
        c = stack.client
        workflow = await c.create_workflow("fast", {"name": "e", "handler": "echo"})
        for _ in range(2):  # the burst
            await c.start(workflow.workflow_id, {})
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await c.start(workflow.workflow_id, {})
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reason, metadata, _ = error_info(limited.value)
        assert reason == "RATE_LIMITED"
        retry_after = float(metadata["retry_after_seconds"])
        assert 0 < retry_after <= 1.0
        # Another tenant has its own budget.
        theirs = await other.create_workflow("theirs", {"name": "e", "handler": "echo"})
        assert (await other.start(theirs.workflow_id, {})).execution_id
        await asyncio.sleep(retry_after)
        assert (await c.start(workflow.workflow_id, {})).execution_id
    finally:
        await other.close()
        await stack.stop()


async def test_a_progress_flood_is_kept_as_heartbeats_beyond_the_rate(
    mongo_server: str, database: str
) -> None:
    stack = await start_stack(mongo_server, database, progress_rate=2.0, progress_burst=3)
    try:
        c = stack.client
        workflow = await c.create_workflow(
            "flood", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 2}
        )
        started = await c.start(workflow.workflow_id, {"seconds": 4})
        attempt_token = await running_attempt_token(stack, started.execution_id)
        flood = 60
        began = time.monotonic()
        for i in range(flood):
            reply = await c.reports.ReportStepProgress(
                sr.ReportStepProgressRequest(
                    execution_id=started.execution_id,
                    step_name="nap",
                    attempt_token=attempt_token,
                    progress=ex_pb.StepProgress(percentage=1, message=f"flood {i}"),
                ),
                timeout=5,
            )
            assert not reply.cancel_requested
        elapsed = time.monotonic() - began
        final = await c.wait_terminal(started.execution_id, 20)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED, "heartbeats kept it alive"
        logged = [
            e
            for e in await c.events(started.execution_id)
            if e.type == ex_pb.EVENT_TYPE_STEP_PROGRESS and "flood" in str(e.data)
        ]
        # The burst, then the rate: never the flood (a second of slack for the clock).
        assert len(logged) <= 3 + 2 * (elapsed + 1), (len(logged), elapsed)
        assert len(logged) < flood
    finally:
        await stack.stop()
