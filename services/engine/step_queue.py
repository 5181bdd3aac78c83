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
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ReadyAttempt:
    execution_id: str
    token: str
    handler: str
    tenant: str
    priority: int
    queued_at: datetime


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
        self._waiters: dict[int, tuple[frozenset[str], asyncio.Event]] = {}
        self._waiter_ids = itertools.count()
        self._closed = False

    def __len__(self) -> int:
        return len(self._live)

    def put(self, item: ReadyAttempt) -> None:
        if item.token in self._live:
            return
        self._live[item.token] = item
        self._by_execution.setdefault(item.execution_id, set()).add(item.token)
        tenant = self._tenants.setdefault(item.tenant, _Tenant())
        lane = tenant.lanes.setdefault(item.handler, {})
        lane.setdefault(item.priority, deque()).append(item)
        self._turns.setdefault(item.tenant, None)
        # Newest poll first: the oldest waiting poll is the likeliest to come from a runner
        # that froze or went away without closing its connection, and what it takes waits
        # for a heartbeat timeout. The others wake too and find what is left.
        for handlers, event in reversed(self._waiters.values()):
            if item.handler in handlers:
                event.set()

    def discard(self, token: str) -> None:
        item = self._live.pop(token, None)
        if item is not None:
            tokens = self._by_execution.get(item.execution_id)
            if tokens is not None:
                tokens.discard(token)
                if not tokens:
                    del self._by_execution[item.execution_id]

    def discard_execution(self, execution_id: str) -> None:
        for token in list(self._by_execution.get(execution_id, ())):
            self.discard(token)

    def pop(self, handlers: Collection[str]) -> ReadyAttempt | None:
        """The next attempt for a runner offering `handlers`: the first tenant in turn that
        has one, its best priority, its oldest."""
        for name in list(self._turns):
            tenant = self._tenants[name]
            best = self._best(tenant, handlers)
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

    async def wait(self, handlers: frozenset[str], seconds: float) -> None:
        """Returns when an attempt for one of `handlers` may be ready, after `seconds`, or
        at once once the queue is closed."""
        if self._closed or seconds <= 0:
            return
        event = asyncio.Event()
        key = next(self._waiter_ids)
        self._waiters[key] = (handlers, event)
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            del self._waiters[key]

    def close(self) -> None:
        """Wakes every poller: the engine is stopping."""
        self._closed = True
        for _, event in self._waiters.values():
            event.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pollers(self) -> int:
        return len(self._waiters)
