"""An engine whose lease was fenced takes a new one and reloads what it held; the callers that
met the fence wait for the new lease only, and an engine never fences its own lease.

Both were behind a start that outlived its 60 s deadline under seeded store faults: a burst of
starts that met a fence waited for the reload of every held execution, one commit each."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from discovery.engine.v1 import execution_pb2 as ex_pb
from pymongo import AsyncMongoClient

from services.engine.clock import utc_now
from services.engine.store.mongo import MongoStore
from services.engine.store.repository import ExecutionStore
from tests.stack import start_stack

STEP = {"handler": "sleep", "heartbeat_timeout_seconds": 5}


class GatedStore:
    """The engine's store, with two doors the test opens: the taking of a new lease after a
    fence, and the claim of what the engine held."""

    def __init__(self, inner: ExecutionStore) -> None:
        self._inner = inner
        self.lease_door = asyncio.Event()
        self.claim_door = asyncio.Event()
        self.lease_door.set()
        self.claim_door.set()
        self.claims_waiting = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def lease_id(self) -> str | None:
        return self._inner.lease_id

    async def acquire_lease(self, *args: Any, **kwargs: Any) -> str:
        await self.lease_door.wait()
        return await self._inner.acquire_lease(*args, **kwargs)

    async def claim_orphans(self) -> list[str]:
        self.claims_waiting += 1
        try:
            await self.claim_door.wait()
        finally:
            self.claims_waiting -= 1
        return await self._inner.claim_orphans()


async def until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.02)


async def test_a_start_that_meets_a_fence_waits_for_the_new_lease_not_the_reload(
    mongo_server: str, database: str
) -> None:
    gated: list[GatedStore] = []

    def wrap(store: ExecutionStore) -> ExecutionStore:
        gated.append(GatedStore(store))
        return gated[0]

    stack = await start_stack(mongo_server, database, wrap_store=wrap)
    store = gated[0]
    database_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    try:
        c = stack.client
        workflow = await c.create_workflow("held", {"name": "only", **STEP})
        held = [
            (await c.start(workflow.workflow_id, {"seconds": 1.0})).execution_id for _ in range(5)
        ]
        # Another engine fences this one's lease (it thought it dead); the engine sees it at
        # its next write and waits, with no lease, for a new one.
        store.lease_door.clear()
        store.claim_door.clear()
        leases = database_client[database]["engine_leases"]
        await leases.update_many({"fenced_at": None}, {"$set": {"fenced_at": utc_now()}})
        await until(lambda: store.lease_id is None, 10, "the engine to see the fence")

        start = asyncio.create_task(c.start(workflow.workflow_id, {"seconds": 0.1}))
        await asyncio.sleep(0.5)
        assert not start.done()  # no lease: it waits for one
        store.lease_door.set()
        # The reload of the five held runs is stuck behind its door: the start is not.
        await until(lambda: store.claims_waiting > 0, 10, "the claim after the new lease")
        started = await asyncio.wait_for(start, 10)
        assert store.claims_waiting > 0

        store.claim_door.set()
        for execution_id in [*held, started.execution_id]:
            final = await c.wait_terminal(execution_id, 30)
            assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    finally:
        store.lease_door.set()
        store.claim_door.set()
        await database_client.close()
        await stack.stop()


async def test_an_engine_never_fences_its_own_lease(mongo_server: str, database: str) -> None:
    """A commit that takes longer than the lease (a database under load) renews it late: the
    engine itself must not take that for death."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    mine, other = MongoStore(client, database), MongoStore(client, database)
    try:
        await mine.open()
        await other.open()
        await mine.acquire_lease("mine", "", 0.2, fence_namesakes=False)
        await other.acquire_lease("other", "", 0.2, fence_namesakes=False)
        await asyncio.sleep(0.4)  # both ran out

        await mine.fence_expired_leases(utc_now() + timedelta(seconds=1))

        await mine.renew_lease()  # not fenced: this would raise Fenced
        leases = {d["engine_id"]: d async for d in client[database]["engine_leases"].find()}
        assert leases["mine"]["fenced_at"] is None
        assert leases["other"]["fenced_at"] is not None
    finally:
        await mine.close()
        await other.close()
        await client.close()
