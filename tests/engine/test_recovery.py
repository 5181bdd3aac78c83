"""SIGKILL the engine with executions in flight, start it again: nothing acknowledged is
lost, nothing is duplicated, and every execution finishes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from tests.stack import (
    Client,
    EngineProcess,
    Pioneer,
    restartable_engine,
    wait_serving,
)

IN_FLIGHT = 20


@pytest.fixture
async def pioneer_and_engine(
    mongo_server: str, database: str, tmp_path: Path
) -> AsyncIterator[tuple[Pioneer, EngineProcess, Client]]:
    async with restartable_engine(mongo_server, database, tmp_path / "engine.log") as running:
        yield running


async def test_sigkill_mid_run_loses_and_duplicates_nothing(
    pioneer_and_engine: tuple[Pioneer, EngineProcess, Client], mongo_server: str, database: str
) -> None:
    _, engine, c = pioneer_and_engine
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 2, "retry": {"max_attempts": 3}}
    workflow = await c.create_workflow(
        "three naps", {"name": "a", **step}, {"name": "b", **step}, {"name": "c", **step}
    )
    started = await asyncio.gather(
        *(c.start(workflow.workflow_id, {"seconds": 0.6 + (i % 4) * 0.3}) for i in range(IN_FLIGHT))
    )
    ids = [s.execution_id for s in started]

    # Kill once some steps have finished and others are running.
    while True:
        executions = await asyncio.gather(*(c.get(i) for i in ids))
        done = sum(e.progress.completed_steps for e in executions)
        if done >= IN_FLIGHT // 2:
            break
        await asyncio.sleep(0.05)
    acknowledged = {e.execution_id: e.last_seq for e in executions}
    engine.kill()
    restarted_at = time.monotonic()
    engine.start()
    await wait_serving(c.target)
    serving_after = time.monotonic() - restarted_at

    finals = [await c.wait_terminal(i, 60) for i in ids]
    recovered_after = time.monotonic() - restarted_at
    print(
        f"\nrecovery: serving again {serving_after:.2f} s after restart, "
        f"all {IN_FLIGHT} executions finished {recovered_after:.2f} s after restart "
        f"(killed with {done} of {IN_FLIGHT * 3} steps done)"
    )
    assert all(f.status == ex_pb.EXECUTION_STATUS_COMPLETED for f in finals)

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    try:
        events = client[database]["events"]
        # The database itself refuses a second event at one place in the log: an event's
        # _id is that place (execution_id:seq).
        first = await events.find_one({"execution_id": finals[0].execution_id, "seq": 1})
        assert first is not None
        with pytest.raises(DuplicateKeyError):
            await events.insert_one({**first, "data": {"written": "twice"}})
        for final in finals:
            docs = await events.find({"execution_id": final.execution_id}).sort("seq", 1).to_list()
            assert all(d["_id"] == f"{final.execution_id}:{d['seq']}" for d in docs)
            seqs = [d["seq"] for d in docs]
            assert seqs == list(range(1, len(seqs) + 1)), "gapless and duplicate-free"
            assert seqs[-1] >= acknowledged[final.execution_id], "no acknowledged event lost"
            finished = [d["data"] for d in docs if d["type"] == "step_finished"]
            successes = Counter(f["order"] for f in finished if f["status"] == "success")
            assert successes == {1: 1, 2: 1, 3: 1}, "each step completed exactly once"
            started_attempts = Counter(
                d["data"]["order"] for d in docs if d["type"] == "step_started"
            )
            assert max(started_attempts.values()) <= 2, "no step ran more than twice"
            # What a watcher replays is exactly what is stored.
            replayed = await c.events(final.execution_id, 0)
            assert [e.seq for e in replayed] == seqs
    finally:
        await client.close()


async def test_sigterm_drains_and_a_restart_finishes_everything(
    pioneer_and_engine: tuple[Pioneer, EngineProcess, Client],
) -> None:
    _, engine, c = pioneer_and_engine
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 2}
    workflow = await c.create_workflow("drain", {"name": "a", **step}, {"name": "b", **step})
    started = [await c.start(workflow.workflow_id, {"seconds": 0.8}) for _ in range(10)]
    await asyncio.sleep(0.5)
    began = time.monotonic()
    code = engine.stop()
    stopped_in = time.monotonic() - began
    assert code == 0 and stopped_in < 12, (code, stopped_in)
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await c.get(started[0].execution_id)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    engine.start()
    await wait_serving(c.target)
    finals = [await c.wait_terminal(s.execution_id, 30) for s in started]
    assert all(f.status == ex_pb.EXECUTION_STATUS_COMPLETED for f in finals)
    for final in finals:
        events = await c.events(final.execution_id, 0)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_another_replica_takes_over_when_the_lease_runs_out(
    pioneer_and_engine: tuple[Pioneer, EngineProcess, Client], tmp_path: Path
) -> None:
    _, engine, c = pioneer_and_engine
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 3}
    workflow = await c.create_workflow("takeover", {"name": "a", **step}, {"name": "b", **step})
    started = [await c.start(workflow.workflow_id, {"seconds": 1.0}) for _ in range(5)]
    engine.kill()
    killed_at = time.monotonic()
    # A replica with another id behind the same address: it must wait for the lease (3 s).
    replica = EngineProcess({**engine.env, "ENGINE_ID": "replica-2"}, tmp_path / "replica.log")
    replica.start()
    try:
        await wait_serving(c.target)
        finals = [await c.wait_terminal(s.execution_id, 30) for s in started]
        took_over_in = time.monotonic() - killed_at
        print(f"\ntakeover: 5 executions finished by the replica {took_over_in:.2f} s after kill")
        assert all(f.status == ex_pb.EXECUTION_STATUS_COMPLETED for f in finals)
        log = (tmp_path / "replica.log").read_text()
        assert log.count('"execution recovered"') == 5
    finally:
        replica.stop()
