"""Two engine replicas on one database: a watcher on either sees every event of an execution
live, in order and once, whichever engine holds the execution and however it moves between
them (a manual run parked, then advanced through the other engine)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from pymongo import AsyncMongoClient

from services.engine.store.repository import ExecutionStore
from tests.stack import Client, Stack, error_info, start_stack


class LogReads:
    """The engine's store, counting the log reads of each execution (a watcher's replay, or
    its going back to the log)."""

    def __init__(self) -> None:
        self.reads: Counter[str] = Counter()

    def wrap(self, inner: ExecutionStore) -> ExecutionStore:
        reads = self.reads

        class Counted:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            async def read_events(self, execution_id: str, after_seq: int, limit: int) -> Any:
                reads[execution_id] += 1
                return await inner.read_events(execution_id, after_seq, limit)

        return Counted()  # the rest of ExecutionStore through __getattr__


Replicas = tuple[Stack, Stack, LogReads]


@pytest.fixture
async def replicas(mongo_server: str, database: str) -> AsyncIterator[Replicas]:
    """Engines A and B (distinct ENGINE_IDs and ports), each with a pioneer polling it; B's
    log reads are counted."""
    reads = LogReads()
    a = await start_stack(mongo_server, database)
    try:
        b = await start_stack(mongo_server, database, wrap_store=reads.wrap)
        try:
            yield a, b, reads
        finally:
            await b.stop()
    finally:
        await a.stop()


def type_name(event: ex_pb.ExecutionEvent) -> str:
    return ex_pb.EventType.Name(event.type).removeprefix("EVENT_TYPE_").lower()


async def advance(client: Client, execution_id: str) -> None:
    """Advances a waiting run through `client`'s engine, once the engine that ran its last
    step has let it go (until then that one holds it: NOT_OWNER)."""
    async with asyncio.timeout(30):
        while True:
            try:
                await client.executions.AdvanceExecution(
                    es.AdvanceExecutionRequest(execution_id=execution_id), timeout=10
                )
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or error_info(exc)[0] != "NOT_OWNER":
                    raise
            await asyncio.sleep(0.05)


async def watch_driving(
    client: Client, execution_id: str, on_waiting: Callable[[int], Any]
) -> list[ex_pb.ExecutionEvent]:
    """Every event from seq 1 to the terminal one, as `client`'s engine streams them; each
    time the run waits, `on_waiting(n)` (n = 1, 2, ...) is awaited before reading on."""
    events: list[ex_pb.ExecutionEvent] = []
    waits = 0
    async with asyncio.timeout(90):
        async for item in client.watch(execution_id, 0):
            events.append(item.event)
            if item.event.type == ex_pb.EVENT_TYPE_WORKFLOW_WAITING:
                waits += 1
                await on_waiting(waits)
    return events


async def logged(stack: Stack, execution_id: str) -> list[tuple[int, str]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_uri)
    try:
        cursor = client[stack.database]["events"].find({"execution_id": execution_id})
        return sorted((d["seq"], d["type"]) for d in await cursor.to_list())
    finally:
        await client.close()


async def test_a_watcher_on_another_replica_gets_the_live_tail_without_reading_the_log(
    replicas: Replicas,
) -> None:
    """The run is held by A throughout; the watcher on B reads the log once (its replay) and
    gets the rest live from B's change feed. Polling the log would read it again and again
    while the step runs."""
    a, b, reads = replicas
    workflow = await a.client.create_workflow(
        "held by A", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 10}
    )
    started = await a.client.start(workflow.workflow_id, {"seconds": 2.5}, manual=True)
    execution_id = started.execution_id

    async def go(_: int) -> None:
        await advance(a.client, execution_id)

    seen = await watch_driving(b.client, execution_id, go)

    log = await logged(a, execution_id)
    assert [(e.seq, type_name(e)) for e in seen] == log
    assert [seq for seq, _ in log] == list(range(1, len(log) + 1))
    assert log[-1][1] == "workflow_completed"
    assert sum(t == "step_progress" for _, t in log) >= 2, "the step reported while watched"
    assert reads.reads[execution_id] == 1, "the replay only: the live tail came from the feed"


async def test_watchers_on_both_replicas_follow_a_run_moving_between_them(
    replicas: Replicas,
) -> None:
    """A manual run of three steps, advanced through A, then B, then A: each engine holds it
    in turn, runs its step, and lets it go. Watchers on A and on B get every event, in
    order, once."""
    a, b, _ = replicas
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 10}
    workflow = await a.client.create_workflow(
        "moving", *({"name": f"s{n}", **step} for n in range(1, 4))
    )
    started = await a.client.start(workflow.workflow_id, {"seconds": 0.6}, manual=True)
    execution_id = started.execution_id
    through = {1: a.client, 2: b.client, 3: a.client}

    async def go(n: int) -> None:
        await advance(through[n], execution_id)

    async def no_drive(_: int) -> None:
        return None

    on_a = asyncio.create_task(watch_driving(a.client, execution_id, no_drive))
    seen_b = await watch_driving(b.client, execution_id, go)
    seen_a = await on_a

    log = await logged(a, execution_id)
    assert [seq for seq, _ in log] == list(range(1, len(log) + 1))
    assert [t for _, t in log].count("workflow_advanced") == 3
    assert log[-1][1] == "workflow_completed"
    assert [(e.seq, type_name(e)) for e in seen_b] == log
    assert [(e.seq, type_name(e)) for e in seen_a] == log


async def test_an_engine_alone_follows_the_log_once_another_engine_comes(
    mongo_server: str, database: str
) -> None:
    """Alone, an engine publishes every event itself and runs no change feed. A watcher on
    it, of a run another engine then drives, still gets every event in order, once: the
    feed starts when the other engine's lease appears, and the watcher catches up."""
    a = await start_stack(mongo_server, database)
    b: Stack | None = None
    try:
        assert a.engine.feed is not None and not a.engine.feed.running
        step = {"handler": "sleep", "heartbeat_timeout_seconds": 10}
        workflow = await a.client.create_workflow("joined", {"name": "s1", **step})
        started = await a.client.start(workflow.workflow_id, {"seconds": 0.3}, manual=True)
        execution_id = started.execution_id

        async def through_a_newcomer(_: int) -> None:
            nonlocal b
            b = await start_stack(mongo_server, database)
            await advance(b.client, execution_id)

        seen = await watch_driving(a.client, execution_id, through_a_newcomer)
        log = await logged(a, execution_id)
        assert [(e.seq, type_name(e)) for e in seen] == log
        assert log[-1][1] == "workflow_completed"
        assert a.engine.feed.running
    finally:
        if b is not None:
            await b.stop()
        await a.stop()
