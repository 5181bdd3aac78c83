"""A store decorator that fails on a seeded schedule, as Temporal's fault-injection store does.

Each call to a wrapped method fails with probability `rate`, either before it reaches the
real store or after it did its work (the caller cannot tell which: the write may or may not
have happened). It fails as the real store does when the database is away: StoreUnavailable,
caused by one of the driver's network errors. The same seed gives the same schedule.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from pymongo.errors import AutoReconnect, NetworkTimeout, NotPrimaryError

from services.engine.store.errors import unavailable
from services.engine.store.repository import ExecutionStore

FAULTS = (AutoReconnect, NotPrimaryError, NetworkTimeout)
# The methods the runner calls while executions run; reads and writes alike.
METHODS = frozenset(
    {
        "append",
        "load_execution",
        "read_events",
        "create_execution",
        "find_by_request_id",
        "claim_orphans",
        "claim_execution",
        "renew_lease",
        "fence_expired_leases",
        "park",
        "add_step_totals",
        "step_totals",
        "get_workflow",
    }
)


class FaultyStore:
    def __init__(self, inner: ExecutionStore, *, seed: int, rate: float) -> None:
        self._inner = inner
        self._random = random.Random(seed)
        self._rate = rate
        self.injected: Counter[str] = Counter()
        self.enabled = True

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in METHODS:
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            fail = self.enabled and self._random.random() < self._rate
            after = self._random.random() < 0.5
            fault = self._random.choice(FAULTS)
            if fail and not after:
                self.injected[f"{name} before"] += 1
                cause = fault(f"injected before {name}")
                raise unavailable(cause) from cause
            result = await target(*args, **kwargs)
            if fail:
                self.injected[f"{name} after"] += 1
                cause = fault(f"injected after {name}")
                raise unavailable(cause) from cause
            return result

        return call
