"""The step queue's order on its own: tenants take turns, then priority, then age."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from services.engine.step_queue import ReadyAttempt, StepQueue

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ready(
    token: str, tenant: str = "a", *, handler: str = "h", priority: int = 3, at: int = 0
) -> ReadyAttempt:
    return ReadyAttempt(
        execution_id=f"e-{token}",
        token=token,
        handler=handler,
        tenant=tenant,
        priority=priority,
        queued_at=T0 + timedelta(seconds=at),
    )


def drain(queue: StepQueue, handlers: frozenset[str] = frozenset({"h"})) -> list[str]:
    out = []
    while (item := queue.pop(handlers)) is not None:
        out.append(item.token)
    return out


def test_tenants_take_turns_so_a_backlog_does_not_starve_a_newcomer() -> None:
    queue = StepQueue()
    for i in range(1000):
        queue.put(ready(f"a{i}", "a", at=i))
    queue.put(ready("b0", "b", at=2000))
    first_two = [queue.pop({"h"}), queue.pop({"h"})]
    assert [item.token for item in first_two if item] == ["a0", "b0"]
    assert len(queue) == 999


def test_round_robin_across_three_tenants() -> None:
    queue = StepQueue()
    for token, tenant in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("b2", "b")]:
        queue.put(ready(token, tenant))
    queue.put(ready("c1", "c"))
    assert drain(queue) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_within_a_tenant_priority_then_age() -> None:
    queue = StepQueue()
    queue.put(ready("old-low", priority=5, at=0))
    queue.put(ready("new-high", priority=1, at=10))
    queue.put(ready("older-mid", priority=3, at=1))
    queue.put(ready("newer-mid", priority=3, at=2))
    assert drain(queue) == ["new-high", "older-mid", "newer-mid", "old-low"]


def test_a_runner_only_gets_its_handlers() -> None:
    queue = StepQueue()
    queue.put(ready("pdf", handler="extract_text"))
    queue.put(ready("mail", handler="send_mail"))
    assert drain(queue, frozenset({"send_mail"})) == ["mail"]
    assert drain(queue, frozenset({"send_mail"})) == []
    assert drain(queue, frozenset({"extract_text", "send_mail"})) == ["pdf"]


def test_discarded_attempts_are_never_handed_out() -> None:
    queue = StepQueue()
    queue.put(ready("gone"))
    queue.put(ready("kept"))
    queue.put(ready("dropped"))
    queue.discard("gone")
    queue.discard_execution("e-dropped")
    queue.put(ready("kept"))  # the same attempt twice is kept once
    assert drain(queue) == ["kept"]
    assert len(queue) == 0


async def test_a_waiting_poller_wakes_when_work_for_it_arrives() -> None:
    queue = StepQueue()
    waiter = asyncio.create_task(queue.wait("r", frozenset({"h"}), 1, 5))
    await asyncio.sleep(0.01)
    queue.put(ready("other", handler="x"))
    await asyncio.sleep(0.01)
    assert not waiter.done(), "woken by work it cannot run"
    queue.put(ready("mine"))
    await asyncio.wait_for(waiter, 1)
    assert queue.pollers == 0


async def test_close_answers_every_poller_at_once() -> None:
    queue = StepQueue()
    waiters = [asyncio.create_task(queue.wait("r", frozenset({"h"}), 1, 30)) for _ in range(3)]
    await asyncio.sleep(0.01)
    queue.close()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    await asyncio.wait_for(queue.wait("r", frozenset({"h"}), 1, 30), 1)


async def test_a_waiting_poll_is_handed_work_directly_only_when_none_waits() -> None:
    queue = StepQueue()
    poll = asyncio.create_task(queue.wait("runner-1", frozenset({"h"}), 2, 5))
    await asyncio.sleep(0.01)
    assert queue.match("x", "a") is None, "matched a handler the poll does not offer"
    matched = queue.match("h", "a")
    assert matched is not None and matched.runner_id == "runner-1"
    matched.woken.set()
    await asyncio.sleep(0.01)
    assert not poll.done(), "answered before the matched take was written"
    matched.deliver("assignment-1")
    assert await asyncio.wait_for(poll, 1) == ["assignment-1"]

    # An attempt of the handler already waits in the queue: it goes first, nothing is matched.
    queue.put(ready("queued"))
    poll = asyncio.create_task(queue.wait("runner-1", frozenset({"h"}), 2, 0.05))
    await asyncio.sleep(0.01)
    assert queue.match("h", "a") is None
    assert await asyncio.wait_for(poll, 1) == []


async def test_a_released_match_frees_the_slot_and_hands_nothing() -> None:
    queue = StepQueue()
    poll = asyncio.create_task(queue.wait("runner-1", frozenset({"h"}), 1, 0.2))
    await asyncio.sleep(0.01)
    matched = queue.match("h", "a")
    assert matched is not None
    assert queue.match("h", "a") is None, "matched beyond the poll's free slots"
    matched.release()
    assert matched.capacity == 1
    assert await asyncio.wait_for(poll, 1) == []


async def test_the_newest_poll_is_served_first() -> None:
    queue = StepQueue()
    order: list[str] = []

    async def poll(name: str) -> None:
        await queue.wait("r", frozenset({"h"}), 1, 5)
        if queue.pop({"h"}) is not None:
            order.append(name)

    # The oldest poll may belong to a runner that froze with its connection open.
    polls = [asyncio.create_task(poll(name)) for name in ("frozen", "live")]
    await asyncio.sleep(0.01)
    queue.put(ready("one"))
    await asyncio.wait_for(asyncio.gather(*polls), 1)
    assert order == ["live"]


async def test_a_runner_of_one_tenant_is_given_only_that_tenants_attempts() -> None:
    queue = StepQueue()
    queue.put(ready("a0", "a"))
    queue.put(ready("b0", "b", at=1))
    assert queue.pop({"h"}, "b") is not None and queue.pop({"h"}, "b") is None
    assert queue.pop({"h"}, "c") is None
    # A waiting poll of tenant b is neither woken by nor handed tenant a's work.
    poll = asyncio.create_task(queue.wait("runner-b", frozenset({"h"}), 1, 0.2, "b"))
    await asyncio.sleep(0.01)
    queue.put(ready("a1", "a", at=2))
    assert queue.match("h", "a") is None
    assert await asyncio.wait_for(poll, 1) == []
    assert drain(queue) == ["a0", "a1"]
    poll = asyncio.create_task(queue.wait("runner-b", frozenset({"h"}), 1, 5, "b"))
    await asyncio.sleep(0.01)
    matched = queue.match("h", "b")
    assert matched is not None and matched.runner_id == "runner-b"
    matched.deliver("assignment-b")
    assert await asyncio.wait_for(poll, 1) == ["assignment-b"]
