"""A database written before events had their place in the log as `_id` (`execution_id:seq`,
read through an (execution_id, seq) index) is moved over when the engine starts, and a move
that was interrupted is finished on the next start: every event stays readable, in order."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, IndexModel

from services.engine.store.schema import EVENT_IDS_MOVE, OLD_EVENT_INDEX
from tests.stack import start_stack

STEP = {"handler": "sleep", "heartbeat_timeout_seconds": 5}


async def _run_two(mongo_server: str, database: str) -> tuple[str, list[tuple[int, int]]]:
    stack = await start_stack(mongo_server, database)
    try:
        c = stack.client
        workflow = await c.create_workflow("old", {"name": "a", **STEP}, {"name": "b", **STEP})
        started = await c.start(workflow.workflow_id, {"seconds": 0.2})
        await c.wait_terminal(started.execution_id)
        events = await c.events(started.execution_id, 0)
        return started.execution_id, [(e.seq, int(e.type)) for e in events]
    finally:
        await stack.stop()


async def _make_old(mongo_server: str, database: str, *, interrupted: bool) -> None:
    """Rewrites the log as the earlier engine wrote it; `interrupted`: as a move that was cut
    short after half of it (the index gone, the marker set, half the events moved)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    try:
        db = client[database]
        docs = await db["events"].find().sort("seq", 1).to_list()
        old = docs[: len(docs) // 2] if interrupted else docs
        await db["events"].delete_many({"_id": {"$in": [d["_id"] for d in old]}})
        await db["events"].insert_many([{**d, "_id": ObjectId()} for d in old])
        if interrupted:
            await db["meta"].insert_one({"_id": EVENT_IDS_MOVE})
        else:
            await db["events"].create_indexes(
                [IndexModel([("execution_id", ASCENDING), ("seq", ASCENDING)], unique=True)]
            )
    finally:
        await client.close()


async def _stored(mongo_server: str, database: str) -> tuple[list[Any], list[str], Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    try:
        db = client[database]
        ids = [d["_id"] for d in await db["events"].find({}, {"_id": 1}).to_list()]
        indexes = [i["name"] async for i in await db["events"].list_indexes()]
        marker = await db["meta"].find_one({"_id": EVENT_IDS_MOVE})
        return ids, indexes, marker
    finally:
        await client.close()


async def _check_moved(mongo_server: str, database: str, execution_id: str, before: Any) -> None:
    stack = await start_stack(mongo_server, database)
    try:
        events = await stack.client.events(execution_id, 0)
        assert [(e.seq, int(e.type)) for e in events] == before
    finally:
        await stack.stop()
    ids, indexes, marker = await _stored(mongo_server, database)
    assert sorted(ids) == sorted(f"{execution_id}:{seq}" for seq, _ in before)
    assert OLD_EVENT_INDEX not in indexes
    assert marker is None


async def test_events_of_an_earlier_engine_are_moved_to_their_ids(
    mongo_server: str, database: str
) -> None:
    execution_id, before = await _run_two(mongo_server, database)
    await _make_old(mongo_server, database, interrupted=False)
    await _check_moved(mongo_server, database, execution_id, before)


async def test_an_interrupted_move_is_finished_on_the_next_start(
    mongo_server: str, database: str
) -> None:
    execution_id, before = await _run_two(mongo_server, database)
    await _make_old(mongo_server, database, interrupted=True)
    await _check_moved(mongo_server, database, execution_id, before)
