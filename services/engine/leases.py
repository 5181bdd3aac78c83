"""This engine's lease on the executions it holds (one per engine process, store/leases.py).

The lease loop renews it (every commit renews it too), fences the leases of engines that
stopped renewing theirs, claims their executions, and lets go of those that wait for a
command. Once another engine has fenced this one's lease, everything held under it is that
engine's to take over: this one lets go of it all and takes a new lease (`relet`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from services.engine.clock import utc_now
from services.engine.domain.errors import DiscoveryError, Fenced
from services.engine.store.repository import ExecutionStore

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(
        self,
        store: ExecutionStore,
        engine_id: str,
        lease_seconds: float,
        *,
        claim: Callable[[], Awaitable[None]],
        drop_all: Callable[[], None],
        park_waiting: Callable[[], None],
        flush: Callable[[], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        """`claim` holds what the lease claims; `drop_all` lets go of everything held;
        `park_waiting` lets go of what waits for a command; `flush` writes what is kept in
        memory between rounds (step durations); `spawn` runs a task the holder tracks."""
        self._store = store
        self._engine_id = engine_id
        self._lease_seconds = lease_seconds
        self._claim = claim
        self._drop_all = drop_all
        self._park_waiting = park_waiting
        self._flush = flush
        self._spawn = spawn
        self._address = ""
        self._task: asyncio.Task[None] | None = None
        self._reletting: asyncio.Future[None] | None = None

    async def open(self, address: str) -> None:
        """Takes a lease, and with it every unfinished execution an earlier process with this
        engine id held, and every one whose engine is gone. `address`: where the other
        engines reach this one, to send it the calls for the executions it holds."""
        self._address = address
        await self._store.acquire_lease(
            self._engine_id, address, self._lease_seconds, fence_namesakes=True
        )
        await self._store.fence_expired_leases(utc_now())
        await self._claim()
        self._task = asyncio.create_task(self._loop(), name="lease-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def release(self) -> None:
        try:
            # Another replica may take them over now rather than after the lease runs out.
            await self._store.release_lease()
        except DiscoveryError as exc:
            log.warning("lease not released: %s", exc)

    async def _loop(self) -> None:
        period = self._lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            try:
                try:
                    await self._store.renew_lease()
                except Fenced:
                    await self.relet()
                await self._store.fence_expired_leases(utc_now())
                await self._claim()
                self._park_waiting()
            except DiscoveryError as exc:
                log.warning("lease renewal failed: %s", exc)
            except Exception:  # the loop that keeps the lease must outlive any one failure
                log.exception("lease renewal failed")
            await self._flush()

    async def relet(self) -> None:
        """Another engine fenced this one's lease (it went too long without renewing it):
        everything held under it is that engine's to take over now. Lets go of it all, takes
        a new lease, and claims what is left to claim. Callers that meet the fence together
        wait for one new lease."""
        if self._reletting is None:
            self._drop_all()
            self._reletting = asyncio.ensure_future(self._take_new_lease())
        await asyncio.shield(self._reletting)

    async def _take_new_lease(self) -> None:
        try:
            delay = 0.5
            while True:
                try:
                    await self._store.acquire_lease(
                        self._engine_id,
                        self._address,
                        self._lease_seconds,
                        fence_namesakes=False,
                    )
                    break
                except DiscoveryError as exc:
                    log.warning("new lease not taken: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._lease_seconds / 3)
            log.warning("new lease taken after a fence")
        finally:
            self._reletting = None
        # Not awaited by the callers that met the fence: they need a lease, not the reload of
        # every execution, which takes a commit each and under load took longer than a
        # client's deadline (a start waited for it and failed a fault test once).
        self._spawn(self._claim_or_log())

    async def _claim_or_log(self) -> None:
        try:
            await self._claim()
        except DiscoveryError as exc:
            log.warning("claim after a new lease failed (the lease loop tries again): %s", exc)
