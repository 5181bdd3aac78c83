"""Executions that wait for a command (manual runs waiting to be advanced) are parked: no
engine holds them in memory or renews their lease, and the command that comes takes them
up again wherever it arrives. However many wait, an engine's memory stays flat."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from pymongo import AsyncMongoClient

from discovery_client.requests import struct
from tests.stack import Client, EngineProcess, Pioneer, Stack, restartable_engine, wait_serving

# What a run holds inline when none of its values is large enough to be set apart as a blob:
# 16 strings of 4 KiB.
INLINE_INPUT = {f"field{i}": "x" * 4096 for i in range(16)}


async def _parked(uri: str, database: str) -> int:
    db: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        # Whether its status document says "waiting" yet depends on how far behind the
        # log the database lets it be (up to PROJECTION_SECONDS); parked it is at once.
        return await db[database]["executions"].count_documents(
            {"parked": True, "lease_owner": None}
        )
    finally:
        await db.close()


async def _wait_parked(uri: str, database: str, count: int) -> None:
    try:
        async with asyncio.timeout(60):
            while await _parked(uri, database) < count:  # noqa: ASYNC110 - the engine's tasks
                await asyncio.sleep(0.05)
    except TimeoutError:
        db: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            cursor = await db[database]["executions"].aggregate(
                [{"$group": {"_id": ["$status", "$parked", "$lease_owner"], "n": {"$sum": 1}}}]
            )
            found = await cursor.to_list()
        finally:
            await db.close()
        raise AssertionError(f"{count} parked runs awaited; found {found}") from None
    assert await _parked(uri, database) == count


async def _wait_none_held(stack: Stack, count: int) -> None:
    runner = stack.engine.runner
    assert runner is not None
    await _wait_parked(stack.mongo_uri, stack.database, count)
    assert runner.held == 0


async def test_waiting_runs_are_let_go_and_taken_up_by_their_next_command(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "manual", {"name": "first", "handler": "echo"}, {"name": "second", "handler": "echo"}
    )
    started = await asyncio.gather(
        *(c.start(workflow.workflow_id, INLINE_INPUT, manual=True) for _ in range(20))
    )
    assert {s.status for s in started} == {ex_pb.EXECUTION_STATUS_WAITING}
    await _wait_none_held(stack, 20)

    # A command takes a parked run up again; after its step it waits, and is let go, again.
    ids = [s.execution_id for s in started]
    for execution_id in ids:
        await c.executions.AdvanceExecution(
            es.AdvanceExecutionRequest(execution_id=execution_id, data=struct({"ok": 1}))
        )
    for execution_id in ids:
        async with asyncio.timeout(20):
            while (await c.get(execution_id)).current_step.order != 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    await _wait_none_held(stack, 20)
    await asyncio.gather(
        *(c.executions.AdvanceExecution(es.AdvanceExecutionRequest(execution_id=i)) for i in ids)
    )
    for execution_id in ids:
        final = await c.wait_terminal(execution_id, 20)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
        assert final.dynamic_properties["ok"] == 1


@pytest.fixture
async def engine_child(
    own_database: str, database: str, tmp_path: Path
) -> AsyncIterator[tuple[Pioneer, EngineProcess, Client]]:
    # The starts here go as fast as the engine takes them, past the default start rate (100
    # a second) on a quiet machine: a refusal there is the rate limit's test, not this one's.
    unlimited = {"ENGINE_START_RATE": "100000", "ENGINE_START_BURST": "100000"}
    async with restartable_engine(
        own_database, database, tmp_path / "engine.log", unlimited
    ) as running:
        yield running


def _rss_bytes(engine: EngineProcess) -> int:
    assert engine.process is not None
    status = Path(f"/proc/{engine.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


async def _start_many(c: Client, workflow_id: str, count: int, document: dict[str, Any]) -> None:
    for first in range(0, count, 50):
        await asyncio.gather(
            *(
                c.start(workflow_id, document, manual=True, deadline_seconds=60)
                for _ in range(min(50, count - first))
            )
        )


async def _clone_runs(uri: str, database: str, like: list[str], copies: int) -> list[str]:
    """Copies of runs the engine started and parked, under new ids: the API, at a few dozen
    starts a second here, would take this test a quarter of an hour for 50,000. Their status
    documents only: nothing reads the log before the wait of a run that is taken up again."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[database]
    try:
        async with asyncio.timeout(60):  # their status documents written
            while True:
                templates = await db["executions"].find({"_id": {"$in": like}}).to_list()
                if all(t["status"] == "waiting" for t in templates):
                    break
                await asyncio.sleep(0.1)
        assert all(t["parked"] for t in templates)
        new_ids = [str(uuid.uuid4()) for _ in range(copies)]
        for first in range(0, copies, 5000):
            await db["executions"].insert_many(
                [
                    {**templates[n % len(templates)], "_id": new_ids[n]}
                    for n in range(first, min(first + 5000, copies))
                ],
                ordered=False,
            )
        return new_ids
    finally:
        await client.close()


@pytest.mark.timeout(600)  # 1,120 starts through the API and 48,880 copies written
async def test_engine_memory_stays_flat_however_many_runs_wait(
    engine_child: tuple[Pioneer, EngineProcess, Client], own_database: str, database: str
) -> None:
    _, engine, c = engine_child
    workflow = await c.create_workflow("manual one", {"name": "only", "handler": "echo"})
    await _start_many(c, workflow.workflow_id, 100, INLINE_INPUT)  # the engine warms up
    await _wait_parked(own_database, database, 100)
    warm = _rss_bytes(engine)

    # 1,000 more with 64 KiB each inline: held, they would take ~70 MiB.
    await _start_many(c, workflow.workflow_id, 1000, INLINE_INPUT)
    await _wait_parked(own_database, database, 1100)
    grown = _rss_bytes(engine) - warm
    assert grown < 30 * 2**20, f"the engine grew {grown / 2**20:.0f} MiB for 1,000 waiting runs"

    # 50,000 waiting, and the engine restarted: none is loaded back.
    small = [
        (await c.start(workflow.workflow_id, {"n": n}, manual=True)).execution_id for n in range(20)
    ]
    await _wait_parked(own_database, database, 1120)
    clones = await _clone_runs(own_database, database, small, 50_000 - 1120)
    assert await _parked(own_database, database) == 50_000
    engine.stop()
    engine.start()
    await wait_serving(c.target)
    await asyncio.sleep(3.5)  # a lease period: the engine has claimed what it would claim
    restarted = _rss_bytes(engine)
    assert restarted < warm + 30 * 2**20, (
        f"restarted with 50,000 waiting runs, the engine holds {restarted / 2**20:.0f} MiB"
        f" (warm with none held: {warm / 2**20:.0f} MiB)"
    )

    # They are real runs: any of them goes on when advanced.
    chosen = random.Random(7).sample(clones, 10)
    await asyncio.gather(
        *(c.executions.AdvanceExecution(es.AdvanceExecutionRequest(execution_id=i)) for i in chosen)
    )
    for execution_id in chosen:
        final = await c.wait_terminal(execution_id, 30)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
