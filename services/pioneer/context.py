"""One running attempt as its step sees it: identity, input, cancellation, and its reports.

The runner creates a `StepContext` per attempt and binds it to the handler's task through a
contextvar, so the SDK's plain functions (`services.pioneer.sdk`) find it without being given
it. Every report carries the attempt's token, which the step itself never handles.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from discovery.engine.v1 import step_report_service_pb2 as report_pb2
from discovery.engine.v1.execution_pb2 import StepProgress

from services.pioneer.errors import (
    EngineUnavailable,
    NotInStep,
    ReportRejected,
    StaleAttempt,
    StepCancelled,
    StepFailure,
)
from services.pioneer.payloads import Outcome, outcome_from_body, progress_from_body
from services.pioneer.reporter import StepReporter

log = logging.getLogger(__name__)

# When the engine sets no heartbeat timeout, a heartbeat still goes out now and then: its
# reply is how a cancellation reaches a step that reports nothing.
DEFAULT_HEARTBEAT_INTERVAL_SECONDS = 10.0
# Retry budgets for reports. A completion is worth waiting for: the engine may be restarting.
MIN_PROGRESS_BUDGET_SECONDS = 5.0
# Progress waiting to be sent for one attempt. Beyond it `report_progress` waits: a step that
# reports faster than the engine takes its reports is slowed down rather than its memory grown.
# The completion carries what is left, so this stays within what the engine takes in a call.
MAX_PENDING_REPORTS = 1000
# Reports in one call (the engine takes up to 1000).
MAX_REPORTS_PER_CALL = 500
# How long a first report waits for company before it goes: a step that reports and ends
# within it sends its reports with its completion, one call and one commit instead of two.
PROGRESS_LINGER_SECONDS = 0.002
MIN_COMPLETION_BUDGET_SECONDS = 10.0
UNBOUNDED_STEP_COMPLETION_BUDGET_SECONDS = 300.0


class StopReason(enum.Enum):
    """Why pioneer stopped an attempt's handler before it returned."""

    CANCELLED = "cancelled"  # CancelStep, or cancel_requested in a reply
    STALE = "stale"  # the engine refused the token: another attempt owns the step
    TIMED_OUT = "timed_out"  # the attempt's timeout_seconds ran out
    SHUTDOWN = "shutdown"  # pioneer is stopping


@dataclass(frozen=True)
class StepInfo:
    execution_id: str
    step_name: str
    handler: str
    attempt: int
    input: Mapping[str, Any]
    # None: the engine set no bound.
    timeout_seconds: float | None
    heartbeat_timeout_seconds: float | None


R = TypeVar("R")


class Resources:
    """What a pioneer hands its steps (a worker pool, limits, a client of some service):
    given when it starts, found by type from inside a step (`ctx.resource(DocumentTools)`),
    never set on a module's globals. One of each type."""

    def __init__(self, *resources: object) -> None:
        self._by_type = {type(resource): resource for resource in resources}

    def get(self, kind: type[R]) -> R:
        resource = self._by_type.get(kind)
        if resource is None:
            # The runner's configuration, not the step's input: a plain step failure.
            raise StepFailure(f"this runner was started without a {kind.__name__} for its steps")
        assert isinstance(resource, kind)
        return resource

    def __iter__(self) -> Iterator[object]:
        return iter(self._by_type.values())


_current: ContextVar[StepContext | None] = ContextVar("pioneer_step", default=None)


def current() -> StepContext:
    ctx = _current.get()
    if ctx is None:
        raise NotInStep("no step is running here: call the step SDK from inside a step handler")
    return ctx


def bind(ctx: StepContext) -> None:
    """Makes `ctx` the current step for the calling task and the tasks it starts."""
    _current.set(ctx)


class StepContext:
    def __init__(
        self,
        info: StepInfo,
        attempt_token: str,
        reporter: StepReporter,
        resources: Resources | None = None,
    ) -> None:
        self.info = info
        self._token = attempt_token
        self._reporter = reporter
        self._resources = resources or Resources()
        self._task: asyncio.Task[Any] | None = None
        self._stopped: StopReason | None = None
        self._completed = False
        # Whether the completion sent said success (once `completed`).
        self.succeeded = False
        self._last_contact = time.monotonic()
        # Progress reported by the step and not sent yet, oldest first, and the task sending
        # it: reports go out in order, one call at a time, those that piled up together.
        self._pending: list[StepProgress] = []
        self._sender: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        # Set once the completion is being sent: nothing is queued after it.
        self._closing = False
        self._lingering = False

    # -- what a step uses ---------------------------------------------------------------------

    @property
    def execution_id(self) -> str:
        return self.info.execution_id

    @property
    def step_name(self) -> str:
        return self.info.step_name

    @property
    def input(self) -> Mapping[str, Any]:
        return self.info.input

    def resource(self, kind: type[R]) -> R:
        """What the runner was started with for its steps, by type (Resources); a step
        failure naming it when there is none."""
        return self._resources.get(kind)

    def is_cancelled(self) -> bool:
        """True once the attempt must stop: cancelled, stale, timed out or shutting down."""
        return self._stopped is not None

    async def report_progress(self, body: Mapping[str, Any]) -> None:
        """Queues the seed's progress body for the engine and returns: the step does not wait
        for the database. Raises ValueError naming a bad field, StepCancelled once the engine
        has answered that the attempt was cancelled (the handler is also cancelled then).

        Reports go out in order; those that pile up while a call is in flight go together in
        the next one, and the completion carries whatever is left, so every report the step
        made is logged before its completion. Progress is best effort otherwise: when the
        engine cannot be reached within the retry budget (it may be restarting) the reports
        are dropped and the step goes on. Whether the attempt is still alive is the engine's
        call, through its heartbeat timeout; the completion, never dropped, is what matters."""
        progress = progress_from_body(body)
        self._raise_if_stopped()
        if self._closing:
            raise StaleAttempt(f"step {self.step_name!r} has already reported its completion")
        while len(self._pending) >= MAX_PENDING_REPORTS:
            self._room.clear()
            await self._room.wait()
            self._raise_if_stopped()
        self._pending.append(progress)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_pending())

    async def heartbeat(self) -> None:
        """Tells the engine the attempt is alive. Raises StepCancelled when it was cancelled."""
        if self._sender is not None and not self._sender.done():
            # Reports are on their way: they are the heartbeat.
            await asyncio.wait({self._sender})
            return
        await self._send_progress([])

    async def report_completion(self, body: Mapping[str, Any]) -> None:
        """Sends the seed's completion body; pioneer then reports nothing more for the attempt."""
        outcome = outcome_from_body(body)
        self._raise_if_stopped()
        await self.send_completion(outcome)

    async def read_blob(self, blob_id: str) -> bytes:
        """The bytes of a blob the input refers to (`{"blob_id", "size_bytes", "sha256"}`)."""
        self._raise_if_stopped()
        request = report_pb2.ReadBlobRequest(
            execution_id=self.execution_id, attempt_token=self._token, blob_id=blob_id
        )
        try:
            return await self._reporter.read_blob(request, budget_seconds=self.completion_budget)
        except StaleAttempt:
            self.stop(StopReason.STALE)
            raise

    async def write_blob(self, data: bytes) -> dict[str, Any]:
        """Stores `data` with the engine, apart from the execution's events, and returns its
        reference `{"blob_id", "size_bytes", "sha256"}`, to put in the step's result.

        Raises ReportRejected when the engine refuses it (e.g. over its blob size cap)."""
        self._raise_if_stopped()
        header = report_pb2.WriteBlobHeader(
            execution_id=self.execution_id, attempt_token=self._token
        )
        try:
            reply = await self._reporter.write_blob(
                header, data, budget_seconds=self.completion_budget
            )
        except StaleAttempt:
            self.stop(StopReason.STALE)
            raise
        if reply.size_bytes != len(data):
            raise ReportRejected(
                f"WriteBlob: the engine stored {reply.size_bytes} bytes of {len(data)}"
            )
        return {"blob_id": reply.blob_id, "size_bytes": reply.size_bytes, "sha256": reply.sha256}

    # -- what the runner uses -----------------------------------------------------------------

    @property
    def attempt_token(self) -> str:
        return self._token

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stopped

    @property
    def completed(self) -> bool:
        return self._completed

    @property
    def heartbeat_interval(self) -> float:
        timeout = self.info.heartbeat_timeout_seconds
        # A third of the timeout: two heartbeats may be lost before the engine gives up.
        return timeout / 3 if timeout else DEFAULT_HEARTBEAT_INTERVAL_SECONDS

    @property
    def progress_budget(self) -> float:
        timeout = self.info.heartbeat_timeout_seconds or 0.0
        return max(timeout, MIN_PROGRESS_BUDGET_SECONDS)

    @property
    def completion_budget(self) -> float:
        timeout = self.info.timeout_seconds
        if timeout is None:
            return UNBOUNDED_STEP_COMPLETION_BUDGET_SECONDS
        return max(timeout, MIN_COMPLETION_BUDGET_SECONDS)

    def seconds_to_next_heartbeat(self) -> float:
        """A progress report also keeps the attempt alive, so it pushes the heartbeat back."""
        return self._last_contact + self.heartbeat_interval - time.monotonic()

    def attach(self, task: asyncio.Task[Any]) -> None:
        self._task = task

    def stop(self, reason: StopReason) -> None:
        """Stops the handler; the first reason sticks."""
        if self._stopped is None:
            self._stopped = reason
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def send_completion(self, outcome: Outcome) -> None:
        self._closing = True
        if self._sender is not None:
            if self._lingering:
                self._sender.cancel()  # what it waited to send goes with the completion
            # The call in flight first: its reports are logged before the ones sent here.
            await asyncio.wait({self._sender})
        left, self._pending = self._pending, []
        self._room.set()
        request = report_pb2.CompleteStepRequest(
            execution_id=self.execution_id,
            step_name=self.step_name,
            attempt_token=self._token,
            success=outcome.success,
            result=outcome.result,
            error=outcome.error,
            progress=left,
        )
        try:
            # Tried at least once per heartbeat interval: an engine back from an outage
            # waits one heartbeat timeout for this attempt's runner before it retries the
            # step, so a try that slept longer than that would lose a finished step's result.
            await self._reporter.complete_step(
                request,
                budget_seconds=self.completion_budget,
                retry_every=self.heartbeat_interval,
            )
        except StaleAttempt:
            self.stop(StopReason.STALE)
            raise
        self._completed = True
        self.succeeded = outcome.success

    def discard_reports(self) -> None:
        """The attempt ended without a completion from here: what was not sent never will be."""
        self._pending.clear()
        self._room.set()
        if self._sender is not None:
            self._sender.cancel()

    # -- internals ----------------------------------------------------------------------------

    async def _send_pending(self) -> None:
        self._lingering = True
        try:
            await asyncio.sleep(PROGRESS_LINGER_SECONDS)
        finally:
            self._lingering = False
        while self._pending and not self._closing and self._stopped is None:
            batch = self._pending[:MAX_REPORTS_PER_CALL]
            del self._pending[:MAX_REPORTS_PER_CALL]
            self._room.set()
            try:
                await self._send_progress(batch)
            except (StepCancelled, StaleAttempt):
                return  # the context has stopped the handler
            except (EngineUnavailable, ReportRejected) as exc:
                log.warning(
                    "progress not delivered",
                    extra={
                        "execution_id": self.execution_id,
                        "step": self.step_name,
                        "reports": len(batch),
                        "error": str(exc),
                    },
                )

    async def _send_progress(self, reports: list[StepProgress]) -> None:
        self._raise_if_stopped()
        request = report_pb2.ReportStepProgressRequest(
            execution_id=self.execution_id,
            step_name=self.step_name,
            attempt_token=self._token,
            progress=reports[0] if reports else None,
            more_progress=reports[1:],
        )
        # Counted from the try, not the answer: a failing engine is not asked again at once.
        self._last_contact = time.monotonic()
        try:
            cancel_requested = await self._reporter.report_progress(
                request, budget_seconds=self.progress_budget
            )
        except StaleAttempt:
            self.stop(StopReason.STALE)
            raise
        if cancel_requested:
            self.stop(StopReason.CANCELLED)
            raise StepCancelled(f"the engine cancelled step {self.step_name!r}")

    def _raise_if_stopped(self) -> None:
        if self._stopped is StopReason.STALE:
            raise StaleAttempt(
                f"step {self.step_name!r}: the engine no longer accepts this attempt"
            )
        if self._stopped is not None:
            raise StepCancelled(f"step {self.step_name!r} was stopped ({self._stopped.value})")
