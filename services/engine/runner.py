"""What the engine does for its callers (the servicers, the webhook runner): start, cancel,
advance and follow executions; workflow definitions and their versions are workflows.py's
(`Runner.workflows`), runners' reports and blobs reports.py's.

Each command becomes a change of the execution's actor (actors.py), which logs it and acts on
it; an execution another engine holds is answered there (HeldElsewhere, forwarded by the RPC
layer). Runners are handed queued attempts by dispatch.py; the lease on what this engine
holds is leases.py's.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from services import jsonlog, tracing
from services.engine.actors import Actors, RunnerSettings
from services.engine.clock import utc_now
from services.engine.dispatch import Dispatch, TakeElsewhere
from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.errors import (
    AlreadyTerminal,
    DiscoveryError,
    ExecutionNotFound,
    IdempotencyConflict,
    InvalidArgument,
    NotWaiting,
    StoreUnavailable,
    Unavailable,
)
from services.engine.domain.payload import check_payload
from services.engine.domain.retry import retried
from services.engine.hub import EventHub
from services.engine.intake import check_input, request_hash, set_large_values_apart
from services.engine.metrics import EngineMetrics
from services.engine.reports import Reports
from services.engine.routing import Commands
from services.engine.step_queue import StepQueue
from services.engine.store.repository import (
    ExecutionFilter,
    ExecutionStore,
    Page,
    RequestIdTaken,
)
from services.engine.watch import watch
from services.engine.workflows import Workflows

__all__ = ["Runner", "RunnerSettings", "visible"]

log = logging.getLogger(__name__)


class Runner:
    def __init__(
        self,
        store: ExecutionStore,
        hub: EventHub,
        settings: RunnerSettings,
        take_elsewhere: TakeElsewhere | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self._settings = settings
        # Unserved unless the engine serves it (app.py): a runner of its own in a test.
        self.metrics = EngineMetrics() if metrics is None else metrics
        self.actors = Actors(store, hub, settings, self.metrics)
        hub.on_delivered = self.metrics.delivered
        self.metrics.follow(
            watchers=lambda: hub.watcher_count,
            held=lambda: self.actors.held,
            pollers=lambda: self.queue.pollers,
            queued=self.queue.ready_by_handler,
        )
        self.commands = Commands(self.actors)
        self.dispatch = Dispatch(self.actors, self.commands, store, take_elsewhere)
        self.reports = Reports(self.actors, self.commands, store, settings)
        self.workflows = Workflows(store, self._offered_handlers)

    async def open(self, address: str = "") -> None:
        """Takes a lease, and with it every unfinished execution an earlier process with this
        engine id held, and every one whose engine is gone. `address`: where the other
        engines reach this one, to send it the calls for the executions it holds."""
        await self.actors.open(address)

    def stop_polls(self) -> None:
        self.actors.stop_polls()

    async def close(self) -> None:
        await self.actors.close()

    @property
    def queue(self) -> StepQueue:
        return self.actors.queue

    @property
    def held(self) -> int:
        return self.actors.held

    def holds(self, execution_id: str) -> bool:
        return self.actors.holds(execution_id)

    def forget_holder(self, execution_id: str) -> None:
        self.commands.forget_holder(execution_id)

    async def _offered_handlers(self) -> set[str]:
        return {h for runner in await self.dispatch.runners() for h in runner.handlers}

    async def typical_step_seconds(self, workflow_id: str) -> dict[str, float]:
        return await self.actors.durations.typical_seconds(workflow_id)

    async def start(
        self,
        workflow_id: str,
        document: dict[str, Any],
        manual: bool,
        request_id: str,
        *,
        tenant: str,
        priority: int = ex.DEFAULT_PRIORITY,
        input_bytes: int = 0,
    ) -> ex.ExecutionState:
        """`input_bytes`: what the tenant's stored bytes are charged for its input, kept with
        the execution so that retention gives it back."""
        if len(request_id) > 128:
            raise InvalidArgument("request_id", "at most 128 characters")
        if priority not in ex.PRIORITIES:
            raise InvalidArgument(
                "priority", f"must be {ex.PRIORITIES[0]} to {ex.PRIORITIES[-1]} (0: the default)"
            )
        fingerprint = request_hash(workflow_id, manual, document) if request_id else None
        if request_id:
            existing = await self.store.find_by_request_id(tenant, request_id)
            if existing is not None:
                return self._same_request(existing, fingerprint)
        workflow = await self.workflows.for_start(workflow_id, tenant=tenant)
        if workflow.input_schema is not None:
            # The document as the client sent it, before any value is set apart as a blob:
            # a refused start stores nothing.
            workflow.input_schema.check(document)
        threshold = self._settings.blob_threshold_bytes
        check_input(document, threshold, self._settings.max_input_bytes)
        execution_id = str(uuid.uuid4())
        # The start's span, kept with the execution: its attempts' spans go under it.
        traceparent = tracing.current_traceparent()
        jsonlog.bind(execution_id, tracing.trace_id(traceparent))
        try:
            kept = await set_large_values_apart(self.store, execution_id, document, threshold)
            now = utc_now()
            state = ex.ExecutionState(
                execution_id=execution_id,
                workflow=workflow,
                mode=ex.MANUAL if manual else ex.AUTOMATIC,
                input=kept,
                created_at=now,
                updated_at=now,
                request_id=request_id or None,
                request_hash=fingerprint,
                priority=priority,
                traceparent=traceparent,
                input_bytes=input_bytes,
            )
            if self.store.lease_id is None:
                await self.actors.leases.relet()
            lease = self.store.lease_id
            await self.store.create_execution(state)
        except RequestIdTaken:
            await self.store.delete_blobs(execution_id)
            existing = await self.store.find_by_request_id(tenant, request_id)
            if existing is None:  # pragma: no cover - the index says it exists
                raise StoreUnavailable("request_id is taken but not readable") from None
            return self._same_request(existing, fingerprint)
        except BaseException:
            # What was set apart must not stay without its execution; a task of its own, as
            # the caller may be gone (deadline, disconnect).
            self.actors.spawn(self._delete_blobs_of_refused(execution_id))
            raise
        return await self.actors.hold_started(state, lease or "")

    async def _delete_blobs_of_refused(self, execution_id: str) -> None:
        try:
            # A write that failed on the network may have gone in all the same.
            if await self.store.load_execution(execution_id) is None:
                await self.store.delete_blobs(execution_id)
        except DiscoveryError as exc:
            log.warning("blobs of refused start %s not deleted: %s", execution_id, exc)

    @staticmethod
    def _same_request(existing: ex.ExecutionState, fingerprint: str | None) -> ex.ExecutionState:
        if existing.request_hash != fingerprint:
            raise IdempotencyConflict(
                f"request_id {existing.request_id!r} was used for another request",
                metadata={"execution_id": existing.execution_id},
            )
        return existing

    async def get(self, execution_id: str, *, tenant: str) -> ex.ExecutionState:
        # From the store even when held here: a read says what the database holds, and
        # while it is down the caller is told so rather than shown this engine's view alone.
        state = await self.store.load_execution(execution_id) if execution_id else None
        if state is None or not visible(state, tenant):
            raise ExecutionNotFound(execution_id)
        return state

    async def list_executions(
        self, *, tenant: str, page_size: int, page_token: str, only: ExecutionFilter
    ) -> Page[ex.ExecutionState]:
        """Newest first, as summaries (no payloads); those `only` lets through."""
        return await self.store.list_executions(tenant, page_size, page_token, only)

    async def started_before(self, request_id: str, *, tenant: str) -> bool:
        """Whether a start with this idempotency key was accepted already."""
        return await self.store.find_by_request_id(tenant, request_id) is not None

    async def tenant_of(self, execution_id: str) -> str | None:
        """The tenant an execution belongs to (what its blobs count against); None for one
        that does not exist."""
        state = await self.store.load_execution(execution_id)
        return state.workflow.tenant_id if state is not None else None

    async def cancel(self, execution_id: str, reason: str, *, tenant: str) -> ex.ExecutionState:
        def produce(state: ex.ExecutionState, now: datetime) -> list[ev.NewEvent]:
            if not visible(state, tenant):
                raise ExecutionNotFound(execution_id)
            if state.is_terminal:
                raise AlreadyTerminal(f"execution {execution_id} is already {state.status}")
            events = [
                ev.step_finished(
                    attempt,
                    ex.ATTEMPT_CANCELLED,
                    error={"reason": "cancelled", "message": reason or "cancelled"},
                    now=now,
                )
                for attempt in state.live_attempts()
            ]
            events.append(ev.workflow_cancelled(reason or "cancelled"))
            return events

        return await self.commands.command(execution_id, produce, tenant)

    async def advance(
        self, execution_id: str, data: dict[str, Any], *, tenant: str
    ) -> ex.ExecutionState:
        check_payload(data, "data", self._settings.max_result_bytes)

        def produce(state: ex.ExecutionState, now: datetime) -> list[ev.NewEvent]:
            if not visible(state, tenant):
                raise ExecutionNotFound(execution_id)
            if state.status != ex.WAITING:
                raise NotWaiting(f"execution {execution_id} is {state.status}, not waiting")
            return [ev.workflow_advanced(data)]

        return await self.commands.command(execution_id, produce, tenant)

    async def retry(
        self, execution_id: str, from_step: str, request_id: str, *, tenant: str
    ) -> ex.ExecutionState:
        """Takes a failed or cancelled execution back to running (domain/retry.py). The same
        `request_id` again answers with the execution as it is."""
        if len(request_id) > 128:
            raise InvalidArgument("request_id", "at most 128 characters")
        for pause in (0.05, 0.1, 0.2, 0.4, 0.8, 0.0):
            state = await self.get(execution_id, tenant=tenant)
            if request_id and request_id in state.retry_request_ids:
                return state
            retried(state, from_step, request_id or None)  # refused here, before any write
            if self.store.lease_id is None:
                await self.actors.leases.relet()
            lease = self.store.lease_id
            # Only an ended execution still at the seq read is reopened: of two retries at
            # once (on any engines), one goes on and the other reads it again.
            if lease is not None and await self.store.reopen(execution_id, state.last_seq):
                return await self.actors.hold_reopened(
                    state, lease, lambda s, n: [retried(s, from_step, request_id or None)]
                )
            # Another retry came first, or the ended run's status is not written yet (it
            # follows its last event by a moment, and gives up the engine's lease then).
            await asyncio.sleep(pause)
        raise Unavailable(f"execution {execution_id} changed while it was retried; retry")

    async def wait_for_end(
        self, execution_id: str, after_seq: int, seconds: float, *, tenant: str
    ) -> bool:
        """Whether the execution reached a terminal state within `seconds`."""
        seconds = min(seconds, self._settings.max_wait_seconds)
        try:
            async with asyncio.timeout(seconds):
                async for item in self.watch(execution_id, after_seq, tenant=tenant):
                    if isinstance(item, ev.Event) and item.is_terminal:
                        return True
        except TimeoutError:
            return False
        return True

    def watch(
        self, execution_id: str, after_seq: int | None, *, tenant: str
    ) -> AsyncGenerator[Any]:
        return watch(self.store, self.hub, execution_id, after_seq, tenant=tenant, held=self.actors)


def visible(state: ex.ExecutionState, tenant: str) -> bool:
    """Whether a caller of `tenant` may see the execution: another tenant's execution must
    look exactly like a missing one."""
    return state.workflow.tenant_id == tenant
