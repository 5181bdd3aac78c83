"""The engine's own limits: message size and load shedding, with the server still serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from discovery.engine.v1 import execution_service_pb2 as es

from tests.stack import Stack, start_stack


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
