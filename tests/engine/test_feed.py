"""The log's change feed on a real database: what a watcher gets when the feed breaks off
while another engine commits (it resumes from its token, or, when it cannot, every watcher
reads the log again), and what its listeners are given."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.errors import StoreUnavailable
from services.engine.domain.workflow import new_workflow
from services.engine.feed import EventFeed
from services.engine.hub import EventHub
from services.engine.store.mongo import MongoStore
from services.engine.store.repository import (
    CommittedEvent,
    CommittedEvents,
    HistoryLost,
    ResumeToken,
)
from services.engine.watch import watch


@pytest.fixture
async def store(mongo_server: str, database: str) -> AsyncIterator[MongoStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    store = MongoStore(client, database)
    await store.open()
    await store.acquire_lease("engine-a", "", 60, fence_namesakes=True)
    yield store
    await store.close()
    await client.close()


class Interrupted:
    """The store as the feed sees it, with a hiccup on demand: the stream breaks off, and
    the resume waits until the test lets it go on, then succeeds or (`history_lost`) is
    refused as the server refuses a token whose history it pruned."""

    def __init__(self, inner: MongoStore, *, history_lost: bool) -> None:
        self._inner = inner
        self._history_lost = history_lost
        self.break_off = False
        self.resuming = asyncio.Event()
        self.go_on = asyncio.Event()

    async def follow_events(self, resume_after: ResumeToken | None) -> CommittedEvents:
        if resume_after is not None:
            self.resuming.set()
            await self.go_on.wait()
            if self._history_lost:
                raise HistoryLost("injected: the resume point is no longer in the oplog")
        return _Breakable(self, await self._inner.follow_events(resume_after))


class _Breakable:
    def __init__(self, faults: Interrupted, inner: CommittedEvents) -> None:
        self._faults = faults
        self._inner = inner

    @property
    def resume_token(self) -> ResumeToken | None:
        return self._inner.resume_token

    async def next(self) -> CommittedEvent | None:
        if self._faults.break_off:
            self._faults.break_off = False
            raise StoreUnavailable("injected: the change stream broke off")
        return await self._inner.next()

    async def close(self) -> None:
        await self._inner.close()


async def _execution(store: MongoStore) -> ex.ExecutionState:
    now = datetime.now(UTC)
    workflow = new_workflow("w", "", [{"name": "s", "handler": "sleep"}], now, tenant_id="t")
    state = ex.ExecutionState("exec-feed", workflow, ex.AUTOMATIC, {}, now, now)
    await store.create_execution(state)
    return state


async def _commit(store: MongoStore, state: ex.ExecutionState, seq: int) -> None:
    """What engine A appends (its hub is not this test's: only the feed brings it here)."""
    event = ev.Event(state.execution_id, seq, ev.STEP_PROGRESS, datetime.now(UTC), {"n": seq})
    state.last_seq = seq  # the log is all this test reads: no step to report on
    await store.append([event], state)


async def _next_event(stream: AsyncGenerator[ex.ExecutionState | ev.Event]) -> ev.Event:
    item = await anext(stream)
    assert isinstance(item, ev.Event)
    return item


@pytest.mark.parametrize("history_lost", [False, True], ids=["resumed", "history-lost"])
async def test_an_event_committed_while_the_feed_is_away_reaches_the_watcher(
    store: MongoStore, history_lost: bool, caplog: pytest.LogCaptureFixture
) -> None:
    state = await _execution(store)
    await _commit(store, state, 1)
    hub = EventHub()
    faults = Interrupted(store, history_lost=history_lost)
    feed = EventFeed(faults, hub)
    await feed.start()
    stream = watch(store, hub, state.execution_id, after_seq=0, tenant="t")
    try:
        async with asyncio.timeout(30):
            assert (await _next_event(stream)).seq == 1
            next_one = asyncio.ensure_future(_next_event(stream))
            faults.break_off = True
            await faults.resuming.wait()
            await _commit(store, state, 2)  # while the feed is away
            faults.go_on.set()
            assert (await next_one).seq == 2
            await _commit(store, state, 3)  # followed again
            assert (await _next_event(stream)).seq == 3
    finally:
        await stream.aclose()
        await feed.stop()
    assert feed.times_lost_track == (1 if history_lost else 0)
    warned = [r for r in caplog.records if "follows the log from now on" in r.getMessage()]
    assert len(warned) == feed.times_lost_track
    assert all(r.levelno == logging.WARNING for r in warned)


async def test_listeners_get_every_committed_event_with_its_tenant(store: MongoStore) -> None:
    state = await _execution(store)
    feed = EventFeed(store, EventHub())
    got: list[CommittedEvent] = []
    three = asyncio.Event()

    class Mirror:
        def committed(self, committed: CommittedEvent) -> None:
            got.append(committed)
            if len(got) == 3:
                three.set()

        def lost_track(self) -> None:
            raise AssertionError("the feed never broke off")

    class Broken:
        def committed(self, committed: CommittedEvent) -> None:
            raise RuntimeError("a listener's own failure")

        def lost_track(self) -> None:
            pass

    await feed.start()
    feed.add_listener(Broken())
    remove = feed.add_listener(Mirror())
    try:
        for seq in (1, 2, 3):
            await _commit(store, state, seq)
        async with asyncio.timeout(30):
            await three.wait()
    finally:
        remove()
        await feed.stop()
    assert [(c.event.execution_id, c.event.seq, c.tenant_id) for c in got] == [
        ("exec-feed", seq, "t") for seq in (1, 2, 3)
    ]
    assert got[0].event.data == {"n": 1} and got[0].event.type == ev.STEP_PROGRESS
    # What watchers see of an event is unchanged by the tenant the log now records.
    assert (await store.read_events("exec-feed", 0, 1))[0] == got[0].event
