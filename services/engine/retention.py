"""Retention: executions that ended DISCOVERY_RETENTION_DAYS ago are deleted with everything
stored for them, and blobs that no execution came for are collected (what is deleted, and in
what order, is store/retention.py).

Every engine sweeps, every DISCOVERY_RETENTION_SWEEP_SECONDS: the deletes are by key and pick
executions by their end alone, so engines sweeping at once only repeat each other, and none
touches an execution that has not ended. A round deletes in batches of BATCH, one after the
other, until a batch finds fewer: a backlog (the first start with retention on, after years)
costs the database one batch at a time, never one huge write. A round that fails (the
database away) is logged, and the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from services.engine.clock import utc_now
from services.engine.domain.errors import StoreUnavailable
from services.engine.store.repository import RetentionStore, Swept

log = logging.getLogger(__name__)

# Executions, or blobs, one batch deletes at most.
BATCH = 100
# A blob that no execution names is collected once this old, or as old as the retention period
# if that is shorter: a start writes its input's blobs a moment before its execution.
STRANDED_BLOB_GRACE = timedelta(hours=1)


class RetentionSweeper:
    def __init__(
        self,
        store: RetentionStore,
        *,
        days: float,
        sweep_seconds: float,
        on_swept: Callable[[Swept], None] | None = None,
    ) -> None:
        """`on_swept(swept)` after each round, with what it deleted (metrics)."""
        self._store = store
        self._on_swept = on_swept
        self._period = timedelta(days=days)
        self._sweep_seconds = sweep_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sweep(self) -> Swept:
        """One round: every execution that ended a retention period ago, and every blob
        stranded for the grace period, batch after batch; what it deleted (also logged, when
        anything). Raises StoreUnavailable when the database fails it: what went before is
        deleted, and logged."""
        began, now = time.monotonic(), utc_now()
        swept = Swept()
        try:
            more = True
            while more:
                batch, more = await self._store.delete_ended(now - self._period, BATCH)
                swept += batch
            grace = min(self._period, STRANDED_BLOB_GRACE)
            more = True
            while more:
                batch, more = await self._store.collect_stranded_blobs(now, grace, BATCH)
                swept += batch
        finally:
            if self._on_swept is not None:
                self._on_swept(swept)
            if swept.executions or swept.events or swept.blobs:
                log.info(
                    "retention deleted %d ended executions and %d stranded or ended blobs",
                    swept.executions,
                    swept.blobs,
                    extra={
                        "executions": swept.executions,
                        "events": swept.events,
                        "blobs": swept.blobs,
                        "blob_bytes": swept.blob_bytes,
                        "tenant_bytes": swept.tenant_bytes,
                        "seconds": round(time.monotonic() - began, 3),
                    },
                )
        return swept

    async def _loop(self) -> None:
        # The first round a period after the start, not at it: recovery and the first calls
        # have the database to themselves.
        while True:
            await asyncio.sleep(self._sweep_seconds)
            try:
                await self.sweep()
            except StoreUnavailable as exc:
                log.warning("retention round failed; the next one tries again: %s", exc)
            except Exception:  # the loop must outlive any one round
                log.exception("retention round failed; the next one tries again")
