"""The database killed and started again while a watcher on engine B follows a run engine A
holds: B's change feed resumes from its resume token (no watcher is sent back to the log)
and the watcher misses nothing of what A commits after the restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from services.engine.store.embedded import DatabaseProcess
from tests.engine.test_replica_watch import (
    LogReads,
    Replicas,
    advance,
    logged,
    type_name,
    watch_driving,
)
from tests.stack import start_stack, wait_database

DOWN_SECONDS = 8.0


@pytest.fixture
async def replicas_on_process(database_process: DatabaseProcess) -> AsyncIterator[Replicas]:
    await wait_database(database_process.uri)
    reads = LogReads()
    a = await start_stack(database_process.uri, "feed")
    try:
        b = await start_stack(database_process.uri, "feed", wrap_store=reads.wrap)
        try:
            yield a, b, reads
        finally:
            await b.stop()
    finally:
        await a.stop()


async def _advance_once_up(replicas: Replicas, execution_id: str) -> None:
    """Through A, as soon as A reaches the database again."""
    a = replicas[0]
    async with asyncio.timeout(60):
        while True:
            try:
                await advance(a.client, execution_id)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.2)


async def test_the_feed_resumes_after_a_database_restart_and_misses_nothing(
    database_process: DatabaseProcess,
    replicas_on_process: Replicas,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, reads = replicas_on_process
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 10}
    workflow = await a.client.create_workflow(
        "restart", {"name": "s1", **step}, {"name": "s2", **step}
    )
    started = await a.client.start(workflow.workflow_id, {"seconds": 0.5}, manual=True)
    execution_id = started.execution_id

    async def go(n: int) -> None:
        if n == 1:
            # The run waits, parked: nothing is in flight when the database goes. Down
            # longer than the driver's server selection (5 s), the one resume pymongo tries
            # by itself fails: the feed's own resume from its token is what brings it back.
            database_process.kill()
            await asyncio.sleep(DOWN_SECONDS)
            await asyncio.to_thread(database_process.start)
            await wait_database(database_process.uri)
        await _advance_once_up(replicas_on_process, execution_id)

    seen = await watch_driving(b.client, execution_id, go)

    log = await logged(a, execution_id)
    assert [seq for seq, _ in log] == list(range(1, len(log) + 1))
    assert log[-1][1] == "workflow_completed"
    assert [(e.seq, type_name(e)) for e in seen] == log
    assert any("event feed interrupted" in r.getMessage() for r in caplog.records)
    assert b.engine.feed is not None and b.engine.feed.times_lost_track == 0, "resumed"
    assert reads.reads[execution_id] == 1, "no watcher went back to the log"
