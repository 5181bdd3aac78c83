"""Every engine's step queue holds every queued attempt, whichever engine holds its execution.

A runner polls one engine (any one, behind a balancer) and must get work from all of them.
Each engine learns of the attempts the others queue from the event log's change stream
(feed.py): a `step_queued` event puts its attempt in this engine's queue, and the events that
end its wait (`step_started`, `step_finished`, the run's end) take it out again. A poll takes
such an attempt through the engine that holds its execution (TakeStepAttempt), which logs the
take: whichever engine's runner asks first gets it, the others hear that it left the queue.

The change stream misses what was queued before it started, or while it could not resume, so
the queue is also filled from the status documents' `queue` field: at start, whenever the feed
lost track, and every RECONCILE_SECONDS (an engine that died with an attempt handed out is also
caught up that way). Those documents may be PROJECTION_SECONDS behind the log: an attempt
taken meanwhile is refused at its take, and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.errors import DiscoveryError
from services.engine.step_queue import ReadyAttempt, StepQueue
from services.engine.store.repository import CommittedEvent

log = logging.getLogger(__name__)

RECONCILE_SECONDS = 10.0


class ReadyAttempts(Protocol):
    async def ready_attempts(self) -> list[ReadyAttempt]:
        """Every queued attempt, as the status documents say, whichever engine holds it."""
        ...


class QueueMirror:
    """A listener of the feed (feed.FeedListener) that keeps `queue` filled with the queued
    attempts of the executions this engine does not hold (`holds`)."""

    def __init__(
        self, queue: StepQueue, store: ReadyAttempts, holds: Callable[[str], bool]
    ) -> None:
        self._queue = queue
        self._store = store
        self._holds = holds
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def committed(self, committed: CommittedEvent) -> None:
        event = committed.event
        if self._holds(event.execution_id):
            return  # its engine is this one: its actors keep the queue for it
        if event.type == ev.STEP_QUEUED:
            if event.attempt_token:
                queued = ev.data_of(event, ev.StepQueuedData)
                self._queue.put(
                    ReadyAttempt(
                        execution_id=event.execution_id,
                        token=event.attempt_token,
                        handler=queued["handler"],
                        tenant=committed.tenant_id,
                        priority=queued.get("priority", ex.DEFAULT_PRIORITY),
                        queued_at=event.time,
                        order=queued["order"],
                    )
                )
        elif event.type in (ev.STEP_STARTED, ev.STEP_FINISHED):
            # A step has one attempt queued at most: whatever it was, it is not now.
            order = event.data["order"]
            self._queue.discard_step(event.execution_id, order)
        elif event.is_terminal:
            self._queue.discard_execution(event.execution_id)

    def lost_track(self) -> None:
        self._due.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-mirror")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except DiscoveryError as exc:
                log.warning("step queue not reconciled with the database: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONCILE_SECONDS):
                    await self._due.wait()
            self._due.clear()

    async def reconcile(self) -> None:
        for item in await self._store.ready_attempts():
            if not self._holds(item.execution_id):
                self._queue.put(item)
