"""The order in which ready step attempts go to the runners that poll for them.

The durable state of a queued attempt is its `step_queued` event in the execution's log (and
the `queue` field of its status document); this module only keeps the order, in memory, for
the executions this engine holds, and wakes the pollers waiting for work. Nothing here
touches the database: the shapes that look work up in a deep backlog there are slow (see
../shared/TOOLCHAIN.md), while a deque costs nothing, and after a restart the engine puts
every queued attempt of the executions it takes back in here.

Fairness: tenants with ready attempts take turns (round robin), so one tenant's backlog of a
thousand attempts delays another tenant's single step by one turn at most. Within a tenant,
priority 1 goes before 5, and the oldest goes first within a priority.

A poll that waits can also be handed an attempt directly (`match`), when nothing of its
handler waits in the queue: the execution's actor (actors.py) then logs the attempt's queueing
and its take in one commit, instead of one commit to queue it and another when the poll wakes
up and takes it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ReadyAttempt:
    execution_id: str
    token: str
    handler: str
    tenant: str
    priority: int
    queued_at: datetime
    # The step's order in its workflow (0: not known, a queue entry written before steps
    # ran side by side): an execution may have several steps queued at once.
    order: int = 0


@dataclass(eq=False)
class Poll:
    """A runner's poll while it waits; what is handed to it directly collects here."""

    runner_id: str
    handlers: frozenset[str]
    # How many more attempts it may be handed.
    capacity: int
    # The one tenant whose attempts the runner may take (its token's); None: any tenant's.
    tenant: str | None = None
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    handed: list[Any] = field(default_factory=list)
    # Matched attempts whose take is being written; the poll answers once they settle.
    pending: int = 0
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, assignment: Any) -> None:
        """The take of a matched attempt is durable: it goes to this runner."""
        self.handed.append(assignment)
        self._settle()

    def release(self) -> None:
        """The take of a matched attempt was not written: the slot is free again."""
        self.capacity += 1
        self._settle()

    def _settle(self) -> None:
        self.pending -= 1
        self.woken.set()
        if self.pending == 0:
            self.settled.set()


@dataclass
class _Tenant:
    # handler -> priority -> attempts oldest first. Entries whose token left `_live` are
    # skipped when they reach the front.
    lanes: dict[str, dict[int, deque[ReadyAttempt]]] = field(default_factory=dict)


class StepQueue:
    def __init__(self) -> None:
        self._live: dict[str, ReadyAttempt] = {}
        self._by_execution: dict[str, set[str]] = {}
        self._tenants: dict[str, _Tenant] = {}
        # Tenants in turn order; the one served last goes to the back.
        self._turns: OrderedDict[str, None] = OrderedDict()
        self._ready_by_handler: Counter[str] = Counter()
        self._polls: dict[int, Poll] = {}
        self._poll_ids = itertools.count()
        self._closed = False

    def __len__(self) -> int:
        return len(self._live)

    def ready_by_handler(self) -> dict[str, int]:
        """Attempts waiting, by handler. A copy made in one step (the metrics thread reads it
        while the event loop changes the queue)."""
        return dict(self._ready_by_handler)

    def put(self, item: ReadyAttempt) -> None:
        if item.token in self._live:
            return
        self._live[item.token] = item
        self._ready_by_handler[item.handler] += 1
        self._by_execution.setdefault(item.execution_id, set()).add(item.token)
        tenant = self._tenants.setdefault(item.tenant, _Tenant())
        lane = tenant.lanes.setdefault(item.handler, {})
        lane.setdefault(item.priority, deque()).append(item)
        self._turns.setdefault(item.tenant, None)
        # Newest poll first: the oldest waiting poll is the likeliest to come from a runner
        # that froze or went away without closing its connection, and what it takes waits
        # for a heartbeat timeout. The others wake too and find what is left.
        for poll in reversed(self._polls.values()):
            if item.handler in poll.handlers and poll.tenant in (None, item.tenant):
                poll.woken.set()

    def discard(self, token: str) -> None:
        item = self._live.pop(token, None)
        if item is not None:
            self._ready_by_handler[item.handler] -= 1
            if not self._ready_by_handler[item.handler]:
                del self._ready_by_handler[item.handler]
            tokens = self._by_execution.get(item.execution_id)
            if tokens is not None:
                tokens.discard(token)
                if not tokens:
                    del self._by_execution[item.execution_id]

    def discard_execution(self, execution_id: str) -> None:
        for token in list(self._by_execution.get(execution_id, ())):
            self.discard(token)

    def discard_step(self, execution_id: str, order: int) -> None:
        """The queued attempt of one step (and any whose step is not known)."""
        for token in list(self._by_execution.get(execution_id, ())):
            if self._live[token].order in (order, 0):
                self.discard(token)

    def pop(self, handlers: Collection[str], tenant: str | None = None) -> ReadyAttempt | None:
        """The next attempt for a runner offering `handlers` (for `tenant` only, unless None):
        the first tenant in turn that has one, its best priority, its oldest."""
        for name in list(self._turns) if tenant is None else [tenant]:
            if name not in self._tenants:
                continue
            best = self._best(self._tenants[name], handlers)
            if best is not None:
                self._turns.move_to_end(name)
                self.discard(best.token)
                self._forget_if_empty(name)
                return best
            self._forget_if_empty(name)
        return None

    def _best(self, tenant: _Tenant, handlers: Collection[str]) -> ReadyAttempt | None:
        best: deque[ReadyAttempt] | None = None
        for handler in handlers:
            for priority, attempts in tenant.lanes.get(handler, {}).items():
                while attempts and attempts[0].token not in self._live:
                    attempts.popleft()
                if not attempts:
                    continue
                head = attempts[0]
                if best is None or (priority, head.queued_at) < (
                    best[0].priority,
                    best[0].queued_at,
                ):
                    best = attempts
        return best.popleft() if best is not None else None

    def _forget_if_empty(self, name: str) -> None:
        tenant = self._tenants[name]
        for handler, priorities in list(tenant.lanes.items()):
            for priority, attempts in list(priorities.items()):
                while attempts and attempts[0].token not in self._live:
                    attempts.popleft()
                if not attempts:
                    del priorities[priority]
            if not priorities:
                del tenant.lanes[handler]
        if not tenant.lanes:
            del self._tenants[name]
            del self._turns[name]

    def match(self, handler: str, tenant: str) -> Poll | None:
        """A waiting poll to hand `tenant`'s attempt of `handler` to directly, newest first,
        and only when no attempt of that handler waits here (those go first)."""
        if self._closed or self._ready_by_handler[handler]:
            return None
        for poll in reversed(self._polls.values()):
            if handler in poll.handlers and poll.capacity > 0 and poll.tenant in (None, tenant):
                poll.capacity -= 1
                poll.pending += 1
                poll.settled.clear()
                return poll
        return None

    async def wait(
        self,
        runner_id: str,
        handlers: frozenset[str],
        capacity: int,
        seconds: float,
        tenant: str | None = None,
    ) -> list[Any]:
        """Waits until an attempt for one of `handlers` (of `tenant`'s, unless None) may be
        ready, for `seconds` at most, or until the queue is closed; returns what was handed
        to the poll meanwhile."""
        if self._closed or seconds <= 0:
            return []
        poll = Poll(runner_id, handlers, capacity, tenant)
        key = next(self._poll_ids)
        self._polls[key] = poll
        try:
            async with asyncio.timeout(seconds):
                await poll.woken.wait()
        except TimeoutError:
            pass
        finally:
            del self._polls[key]
        if poll.pending:
            # Matched attempts are being logged as taken by this runner: they are its own.
            await poll.settled.wait()
        return poll.handed

    def close(self) -> None:
        """Wakes every poller: the engine is stopping."""
        self._closed = True
        for poll in self._polls.values():
            poll.woken.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pollers(self) -> int:
        return len(self._polls)
