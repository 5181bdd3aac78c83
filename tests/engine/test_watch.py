"""Watching: slow watchers, and what the server tells them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.errors import WatcherTooSlow
from services.engine.domain.workflow import new_workflow
from services.engine.hub import EventHub
from services.engine.store.mongo import MongoStore
from services.engine.watch import watch


@pytest.fixture
async def store(mongo_server: str, database: str) -> AsyncIterator[MongoStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    store = MongoStore(client, database)
    await store.open()
    await store.acquire_lease("watch-test", "", 60, fence_namesakes=True)
    yield store
    await store.close()
    await client.close()


async def test_a_watcher_that_falls_behind_is_told_where_to_resume(store: MongoStore) -> None:
    now = datetime.now(UTC)
    workflow = new_workflow("w", "", [{"name": "s", "handler": "sleep"}], now, tenant_id="t")
    state = ex.ExecutionState("exec-slow", workflow, ex.AUTOMATIC, {}, now, now)
    await store.create_execution(state)
    first = state.numbered(ev.NewEvent(ev.WORKFLOW_STARTED, {}), now)
    state.apply(first)
    await store.append([first], state)

    hub = EventHub(capacity=3)
    stream = watch(store, hub, "exec-slow", after_seq=None, tenant="t")
    snapshot = await anext(stream)
    assert isinstance(snapshot, ex.ExecutionState) and snapshot.last_seq == 1
    # Ten events arrive while the watcher is busy elsewhere: more than its buffer holds.
    for seq in range(2, 12):
        hub.publish([ev.Event("exec-slow", seq, ev.STEP_PROGRESS, now, {})])
    with pytest.raises(WatcherTooSlow) as slow:
        await anext(stream)
    assert slow.value.metadata == {"last_seq": "1"}
    # Publishing to the others never waited on it, and it is gone from the hub.
    assert hub.watcher_count == 0


async def test_fast_watchers_are_unaffected_by_a_slow_one(store: MongoStore) -> None:
    hub = EventHub(capacity=3)
    slow = hub.subscribe("x")
    fast = hub.subscribe("x")
    now = datetime.now(UTC)
    for seq in range(1, 6):
        hub.publish([ev.Event("x", seq, ev.STEP_PROGRESS, now, {})])
        got = await fast.get()
        assert got is not None and got.seq == seq
    assert slow.overflowed and not fast.overflowed


async def test_a_watcher_queue_is_bounded_in_bytes_too(store: MongoStore) -> None:
    """A step_started event carries the step's whole input: a few of them, far fewer than the
    queue's count, overflow a watcher that reads nothing; small ones fill it only by count."""
    hub = EventHub(capacity=1000, max_bytes=256 * 1024)
    slow = hub.subscribe("x")
    now = datetime.now(UTC)
    big = {"input_payload": {"text": "x" * 60_000}}
    for seq in range(1, 10):
        hub.publish([ev.Event("x", seq, ev.STEP_STARTED, now, big)])
        assert slow.bytes <= 256 * 1024
    assert slow.overflowed
    # One event bigger than the whole bound still reaches a watcher that keeps up.
    fast = hub.subscribe("y")
    huge = {"input_payload": {"text": "x" * 300_000}}
    hub.publish([ev.Event("y", 1, ev.STEP_STARTED, now, huge)])
    assert not fast.overflowed
    got = await fast.get()
    assert got is not None and got.seq == 1 and fast.bytes == 0


async def test_an_event_from_its_engine_and_from_the_feed_is_offered_once() -> None:
    """The engine that commits an event publishes it, and the log's change feed brings it
    again a few milliseconds later: a watcher's queue holds it once."""
    hub = EventHub()
    watcher = hub.subscribe("x")
    now = datetime.now(UTC)
    first, second = (ev.Event("x", seq, ev.STEP_PROGRESS, now, {}) for seq in (1, 2))
    hub.publish([first, second])  # by its engine
    hub.publish([first])  # by the feed
    hub.publish([second])
    hub.resync()
    assert [await watcher.get() for _ in range(3)] == [first, second, None]
    assert watcher.bytes == 0
