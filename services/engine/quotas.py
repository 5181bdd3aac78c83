"""Per-tenant quotas: how much of the engine one tenant may hold, so that no tenant's load
stops another's, nor the step runners that every execution depends on.

Two kinds:

- Calls in flight (`CallQuotas`, applied to every call by rpc/call_quotas.py). Each tenant
  has a budget of unary calls and one of long calls (WatchExecution streams, sync
  ExecuteWorkflow), and all tenants together have the clients' pool. Step runners' calls
  (reports, heartbeats, polls, blobs) have a pool of their own that client load cannot take,
  and health checks, which carry no credentials, share a small one. gRPC's own
  `maximum_concurrent_rpcs` stays above the sum, as the last resort.
- What a tenant keeps (`TenantUsage`): executions not yet ended, and bytes stored (inputs and
  blobs). Several engines may share one database, so the counts come from it: the executions
  not ended are counted there, and stored bytes are a `$inc` counter per tenant there. Both
  are read (and this engine's new bytes added) at most once a second while starts come in,
  never once per start: a start is judged by that view plus what this engine admitted since.
  The view may miss another engine's last second of starts; a refusal is checked again
  against a fresh count, so an execution that ended, or bytes that retention gave back (it
  takes off what each execution it deletes was charged, services/engine/retention.py), never
  block a start for long.

Every refusal is `QuotaExceeded`: RESOURCE_EXHAUSTED with the quota named (google.rpc
ErrorInfo and QuotaFailure), 429 through the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from services.engine.domain.errors import QuotaExceeded
from services.engine.store.repository import TenantCounts, TenantUsageStore

log = logging.getLogger(__name__)

TENANT_CALLS = "tenant_calls"
TENANT_LONG_CALLS = "tenant_long_calls"
CLIENT_CALLS = "client_calls"
RUNNER_CALLS = "runner_calls"
HEALTH_CALLS = "health_calls"
RUNNING_EXECUTIONS = "running_executions"
STORED_BYTES = "stored_bytes"

# How stale the database's counts may be while starts come in.
REFRESH_SECONDS = 1.0
# What a tenant stored stays stored until retention deletes it, days later (a round every
# DISCOVERY_RETENTION_SWEEP_SECONDS): a client told to retry in a second would only send its
# input again and again for nothing.
STORED_BYTES_RETRY_SECONDS = 60.0


class CallPool:
    """Calls in flight per key (a tenant, or "" for a shared pool), each key up to `limit`."""

    def __init__(self, quota: str, limit: int, what: str) -> None:
        self.quota = quota
        self.limit = limit
        self._what = what
        self._held: Counter[str] = Counter()

    def take(self, key: str = "") -> None:
        if self._held[key] >= self.limit:
            subject = f"tenant:{key}" if key else self.quota
            owner = f"tenant {key!r}" if key else "the engine"
            raise QuotaExceeded(
                self.quota,
                subject,
                f"{owner} holds {self._held[key]} {self._what} at once (limit {self.limit})",
                limit=self.limit,
            )
        self._held[key] += 1

    def give(self, key: str = "") -> None:
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]

    def held(self, key: str = "") -> int:
        return self._held[key]


@dataclass(frozen=True)
class CallQuotas:
    tenant_calls: CallPool
    tenant_long_calls: CallPool
    client_calls: CallPool
    runner_calls: CallPool
    health_calls: CallPool

    @classmethod
    def of(
        cls, *, tenant_calls: int, tenant_long_calls: int, clients: int, runners: int, health: int
    ) -> CallQuotas:
        return cls(
            CallPool(TENANT_CALLS, tenant_calls, "unary calls"),
            CallPool(TENANT_LONG_CALLS, tenant_long_calls, "long calls (watches, sync executes)"),
            CallPool(CLIENT_CALLS, clients, "client calls of all tenants"),
            CallPool(RUNNER_CALLS, runners, "step runner calls"),
            CallPool(HEALTH_CALLS, health, "health checks"),
        )

    def admit_client(self, tenant: str, *, long: bool) -> Callable[[], None]:
        """Takes the tenant's place and one of the clients' pool; the release."""
        own = self.tenant_long_calls if long else self.tenant_calls
        own.take(tenant)
        try:
            self.client_calls.take()
        except QuotaExceeded:
            own.give(tenant)
            raise

        def release() -> None:
            own.give(tenant)
            self.client_calls.give()

        return release

    def admit_shared(self, pool: CallPool) -> Callable[[], None]:
        pool.take()
        return pool.give


@dataclass
class _Start:
    tenant: str
    input_bytes: int
    # When its execution was stored (monotonic); None while the start is under way.
    stored_at: float | None = None


@dataclass
class TenantUsage:
    """Running executions and stored bytes per tenant, as the database counts them plus what
    this engine admitted since (see the module docstring)."""

    store: TenantUsageStore
    max_running: int
    max_stored_bytes: int
    refresh_seconds: float = REFRESH_SECONDS
    clock: Callable[[], float] = time.monotonic
    _counts: dict[str, TenantCounts] = field(default_factory=dict)
    _counted_at: float = float("-inf")
    # Starts this engine admitted that the last count may not include.
    _starts: list[_Start] = field(default_factory=list)
    # Bytes stored here and not yet added to the database's counters (or being added).
    _unflushed: Counter[str] = field(default_factory=Counter)
    _flushing: Counter[str] = field(default_factory=Counter)
    _refreshing: asyncio.Future[None] | None = None
    _wanted: asyncio.Event = field(default_factory=asyncio.Event)
    _loop_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        with contextlib.suppress(Exception):  # the first start counts again if this failed
            await self.refresh()
        self._loop_task = asyncio.create_task(self._loop(), name="tenant-usage")

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._refreshing is not None and not self._refreshing.done():
            # A round its callers stopped waiting for (the loop, just cancelled) still asks
            # the database: it ends before the store it uses closes.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._refreshing)
            self._refreshing.cancel()
        if self._unflushed:
            # A second's worth of bytes at most, not worth holding a stop for long.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.refresh()

    # --- what the servicers ask ------------------------------------------------------

    async def admit_start(self, tenant: str, input_bytes: int) -> _Start:
        """Reserves a start of `tenant` with an input of `input_bytes`, or raises
        QuotaExceeded. Tell `stored` or `dropped` how it went."""
        self._wanted.set()
        try:
            self._check_start(tenant, input_bytes)
        except QuotaExceeded:
            if self._fresh():
                raise
            # Executions end, and retention gives bytes back, without this engine hearing of
            # it: count again before refusing.
            await self.refresh()
            self._check_start(tenant, input_bytes)
        start = _Start(tenant, input_bytes)
        self._starts.append(start)
        return start

    def stored(self, start: _Start) -> None:
        """The execution is stored: its input counts as bytes from now on, and it counts as
        running until the database's count includes it."""
        start.stored_at = self.clock()
        self._unflushed[start.tenant] += start.input_bytes
        self._wanted.set()

    def dropped(self, start: _Start) -> None:
        """Nothing was stored (refused, failed, or an earlier start answered again)."""
        with contextlib.suppress(ValueError):
            self._starts.remove(start)

    def check_bytes(self, tenant: str, more: int) -> None:
        """Raises QuotaExceeded if `more` bytes would take the tenant over its quota. Stored
        bytes go down only when retention deletes, so a stale view seldom refuses wrongly, and
        a refusal has them counted again for the next call."""
        held = self.stored_bytes(tenant)
        if held + more > self.max_stored_bytes:
            self._wanted.set()
            raise QuotaExceeded(
                STORED_BYTES,
                f"tenant:{tenant}",
                f"tenant {tenant!r} stores {held} bytes; {more} more would pass its limit of "
                f"{self.max_stored_bytes}",
                limit=self.max_stored_bytes,
                retry_after=STORED_BYTES_RETRY_SECONDS,
            )

    def add_bytes(self, tenant: str, size: int) -> None:
        self._unflushed[tenant] += size
        self._wanted.set()

    def running(self, tenant: str) -> int:
        counted = self._counts.get(tenant, TenantCounts()).running
        return counted + sum(1 for s in self._starts if s.tenant == tenant)

    def stored_bytes(self, tenant: str) -> int:
        counted = self._counts.get(tenant, TenantCounts()).stored_bytes
        in_flight = sum(
            s.input_bytes for s in self._starts if s.tenant == tenant and s.stored_at is None
        )
        return counted + self._unflushed[tenant] + self._flushing[tenant] + in_flight

    def _check_start(self, tenant: str, input_bytes: int) -> None:
        running = self.running(tenant)
        if running >= self.max_running:
            raise QuotaExceeded(
                RUNNING_EXECUTIONS,
                f"tenant:{tenant}",
                f"tenant {tenant!r} has {running} running executions (limit {self.max_running})",
                limit=self.max_running,
            )
        self.check_bytes(tenant, input_bytes)

    def _fresh(self) -> bool:
        return self.clock() - self._counted_at < self.refresh_seconds

    # --- the database's counts -------------------------------------------------------

    async def refresh(self) -> None:
        """Adds this engine's new bytes to the database's counters and reads every count;
        callers at the same time share one round."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
            # Its callers hear how it went; with all of them gone, nobody has to.
            self._refreshing.add_done_callback(_retrieved)
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        began = self.clock()
        self._flushing, self._unflushed = self._unflushed, Counter()
        try:
            counts = await self.store.tenant_usage(dict(self._flushing))
        except BaseException:
            self._unflushed.update(self._flushing)  # added next time
            self._flushing = Counter()
            raise
        self._counts, self._flushing, self._counted_at = counts, Counter(), began
        # A start stored before this count began is in it.
        self._starts = [s for s in self._starts if s.stored_at is None or s.stored_at >= began]

    async def _loop(self) -> None:
        """Keeps the counts at most a second old while starts and blobs come in; an idle
        engine asks the database nothing."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.refresh()
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("tenant usage not counted: %s", exc)
                self._wanted.set()
            await asyncio.sleep(self.refresh_seconds)


def _retrieved(round_: asyncio.Future[None]) -> None:
    if not round_.cancelled():
        round_.exception()
