"""TenantUsage's bookkeeping against a fake database: what this engine admitted is counted
exactly once, whether or not the database's count has it yet, and bytes reach the counters
once even when a round fails."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

import pytest

from services.engine.domain.errors import QuotaExceeded
from services.engine.quotas import RUNNING_EXECUTIONS, STORED_BYTES, TenantUsage
from services.engine.store.repository import TenantCounts


class FakeDatabase:
    """Counters and running counts as a database would hold them."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.stored: Counter[str] = Counter()
        self.rounds = 0
        self.fail = False

    async def tenant_usage(self, stored_bytes: Mapping[str, int]) -> dict[str, TenantCounts]:
        self.rounds += 1
        if self.fail:
            raise ConnectionError("database away")
        self.stored.update(stored_bytes)
        return {
            t: TenantCounts(self.running[t], self.stored[t])
            for t in set(self.running) | set(self.stored)
        }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def usage(db: FakeDatabase, clock: Clock, **limits: int) -> TenantUsage:
    return TenantUsage(
        db,
        max_running=limits.get("running", 10),
        max_stored_bytes=limits.get("stored", 1000),
        clock=clock,
    )


async def test_a_start_counts_once_before_and_after_the_database_has_it() -> None:
    db, clock = FakeDatabase(), Clock()
    counts = usage(db, clock)
    start = await counts.admit_start("a", 10)
    assert counts.running("a") == 1 and counts.stored_bytes("a") == 10
    counts.stored(start)
    db.running["a"] += 1  # the execution is in the database now
    clock.now += 0.1
    await counts.refresh()
    assert counts.running("a") == 1, "the database's count has it; the engine's no longer"
    assert counts.stored_bytes("a") == 10 and db.stored["a"] == 10
    assert counts.running("b") == 0


async def test_a_start_stored_during_a_count_is_kept_until_the_next() -> None:
    db, clock = FakeDatabase(), Clock()
    counts = usage(db, clock)
    start = await counts.admit_start("a", 0)
    clock.now += 1
    counts.stored(start)  # after the count below began (same clock reading): not in it
    clock.now -= 1
    await counts.refresh()
    assert counts.running("a") == 1


async def test_a_refusal_on_a_stale_count_counts_again() -> None:
    db, clock = FakeDatabase(), Clock()
    counts = usage(db, clock, running=2)
    db.running["a"] = 2
    await counts.refresh()
    with pytest.raises(QuotaExceeded) as full:
        await counts.admit_start("a", 0)
    assert full.value.quota == RUNNING_EXECUTIONS
    assert db.rounds == 1, "a fresh count is not asked again"
    db.running["a"] = 1  # one ended, without this engine hearing of it
    clock.now += 5
    await counts.admit_start("a", 0)
    assert db.rounds == 2


async def test_dropped_starts_and_bytes_over_the_limit() -> None:
    db, clock = FakeDatabase(), Clock()
    counts = usage(db, clock, stored=100)
    counts.dropped(await counts.admit_start("a", 60))
    assert counts.running("a") == 0 and counts.stored_bytes("a") == 0
    counts.stored(await counts.admit_start("a", 60))
    with pytest.raises(QuotaExceeded) as over:
        await counts.admit_start("a", 41)
    assert over.value.quota == STORED_BYTES
    assert over.value.metadata["retry_after_seconds"] == "60.000"
    counts.check_bytes("a", 40)
    counts.add_bytes("a", 40)
    with pytest.raises(QuotaExceeded):
        counts.check_bytes("a", 1)


async def test_bytes_retention_gave_back_admit_a_start_a_stale_count_would_refuse() -> None:
    db, clock = FakeDatabase(), Clock()
    counts = usage(db, clock, stored=100)
    db.stored["a"] = 90
    await counts.refresh()
    with pytest.raises(QuotaExceeded) as over:
        await counts.admit_start("a", 20)
    assert over.value.quota == STORED_BYTES
    assert db.rounds == 1, "a fresh count is not asked again"
    db.stored["a"] = 30  # retention deleted executions, on whichever engine
    clock.now += 5
    counts.stored(await counts.admit_start("a", 20))
    assert db.rounds == 2 and counts.stored_bytes("a") == 50


async def test_bytes_reach_the_database_once_even_when_a_round_fails() -> None:
    db, clock = FakeDatabase(), Clock()
    counts = usage(db, clock)
    counts.add_bytes("a", 30)
    db.fail = True
    with pytest.raises(ConnectionError):
        await counts.refresh()
    assert counts.stored_bytes("a") == 30
    db.fail = False
    await counts.refresh()
    await counts.refresh()
    assert db.stored["a"] == 30 and counts.stored_bytes("a") == 30


class ClosingDatabase(FakeDatabase):
    """A round that is still asking when the engine stops, and whose client is then closed
    under it (pymongo: InvalidOperation after close)."""

    def __init__(self) -> None:
        super().__init__()
        self.asking = asyncio.Event()
        self.closed = False

    async def tenant_usage(self, stored_bytes: Mapping[str, int]) -> dict[str, TenantCounts]:
        if self.rounds:  # the first round is open()'s
            self.asking.set()
            await asyncio.sleep(0.2)
            if self.closed:
                raise RuntimeError("cannot use the client after close")
        return await super().tenant_usage(stored_bytes)


async def test_a_round_in_flight_ends_before_close_returns_and_its_failure_is_no_ones() -> None:
    db = ClosingDatabase()
    counts = usage(db, Clock())
    await counts.open()
    counts.add_bytes("a", 5)  # wakes the loop, whose round then waits on the database
    await asyncio.wait_for(db.asking.wait(), 5)
    await counts.close()  # cancels the loop that awaited the round
    db.closed = True  # the store closes after the quotas, as Engine.stop does
    assert db.stored["a"] == 5, "the round ended before close returned"
    await asyncio.sleep(0.3)
    # Nothing left running to fail after the close: tests/conftest.py fails the test on any
    # task exception nobody retrieved.
