"""Persistence faults: a seeded 5 % of store calls fail (before or after doing their work)
across a run of many executions. Clients only ever see UNAVAILABLE, and every run ends
with a gapless log in which each step succeeded exactly once."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from typing import Any

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from pymongo import AsyncMongoClient

from services.engine.store.repository import ExecutionStore
from tests.fakes.faulty_store import FaultyStore
from tests.stack import Client, start_stack

EXECUTIONS = 200
SEED = 20250822


def _tasks_waiting() -> str:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=out)
    return out.getvalue()


async def start_until_accepted(c: Client, workflow_id: str, i: int, codes: Counter[str]) -> str:
    """A client's start, retried with its idempotency key while the engine says UNAVAILABLE."""
    for _ in range(50):
        try:
            # 200 starts at once queue behind one in-process database: 10 s is not always
            # enough on a 2-core machine (it timed out before the step queue too). The
            # deadline is the client's patience, not a fault this test injects.
            started = await c.start(
                workflow_id, {"seconds": 0.2, "i": i}, request_id=f"run-{i}", deadline_seconds=60
            )
            return started.execution_id
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                # Once (CI), a start here outlived its 60 s deadline while the slowest takes
                # about 4 s: it met a fence and waited for the reload of every held run
                # (tests/engine/test_fences.py). Should one hang again, say where the engine
                # (in this process) waited.
                print(_tasks_waiting())
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
            await asyncio.sleep(0.05)
    raise AssertionError(f"start {i} never accepted")


async def test_seeded_store_faults_lose_and_duplicate_nothing(
    mongo_server: str, database: str
) -> None:
    faulty: list[FaultyStore] = []

    def wrap(store: ExecutionStore) -> ExecutionStore:
        faulty.append(FaultyStore(store, seed=SEED, rate=0.05))
        return faulty[0]

    stack = await start_stack(mongo_server, database, wrap_store=wrap)
    try:
        c = stack.client
        step = {"handler": "sleep", "heartbeat_timeout_seconds": 3, "retry": {"max_attempts": 5}}
        workflow = await c.create_workflow("flaky", {"name": "a", **step}, {"name": "b", **step})
        codes: Counter[str] = Counter()
        ids = await asyncio.gather(
            *(start_until_accepted(c, workflow.workflow_id, i, codes) for i in range(EXECUTIONS))
        )
        assert len(set(ids)) == EXECUTIONS
        finals = []
        for execution_id in ids:
            finals.append(await c.wait_terminal(execution_id, 90))
        injected = faulty[0].injected
        print(
            f"\nstore faults: {sum(injected.values())} injected {dict(injected)}; "
            f"clients saw {dict(codes)}"
        )
        assert sum(injected.values()) > 10
        assert all(f.status == ex_pb.EXECUTION_STATUS_COMPLETED for f in finals)
    finally:
        faulty[0].enabled = False
        await stack.stop()

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    try:
        events = client[database]["events"]
        for execution_id in ids:
            docs = await events.find({"execution_id": execution_id}).sort("seq", 1).to_list()
            seqs = [d["seq"] for d in docs]
            assert seqs == list(range(1, len(seqs) + 1))
            successes = Counter(
                d["data"]["order"]
                for d in docs
                if d["type"] == "step_finished" and d["data"]["status"] == "success"
            )
            assert successes == {1: 1, 2: 1}
            assert sum(d["type"] in ("workflow_completed", "workflow_failed") for d in docs) == 1
        assert await client[database]["executions"].count_documents({}) == EXECUTIONS
    finally:
        await client.close()
