"""Runs accepted attempts in the background and reports how each one ended.

Attempts come from the engine's step queue (services/pioneer/poller.py asks for as many as
there are free slots) or, for tools that push, from StartStep.

Per attempt, a supervisor task starts the handler in a task of its own (bound to its
`StepContext`), keeps the attempt alive with heartbeats, bounds it by `timeout_seconds`, and
reports the completion the handler did not report itself. A handler that raises is reported
as a failed step; nothing a handler does brings pioneer down. A cancelled or stale attempt is
stopped and reported no further: the engine has already recorded how it ended.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from discovery.engine.v1.step_queue_service_pb2 import StepTask
from discovery.pioneer.v1.step_runner_service_pb2 import StartStepRequest

from services import jsonlog, tracing
from services.pioneer.context import Resources, StepContext, StepInfo, StopReason, bind
from services.pioneer.errors import (
    EngineUnavailable,
    InvalidAttempt,
    ReportRejected,
    RunnerFull,
    StaleAttempt,
    StepCancelled,
    StepFailure,
)
from services.pioneer.metrics import PioneerMetrics
from services.pioneer.payloads import Outcome, dict_from_struct, failure, outcome_from_body
from services.pioneer.registry import StepHandler
from services.pioneer.reporter import StepReporter

log = logging.getLogger(__name__)

# Tokens of ended attempts are kept so that a late duplicate StartStep does not run them again.
REMEMBERED_TOKENS = 10_000
# How long a stopped handler may take to unwind before the runner stops waiting for it.
CANCEL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class _Running:
    ctx: StepContext
    supervisor: asyncio.Task[None]


class StepRunner:
    def __init__(
        self,
        reporter: StepReporter,
        *,
        max_concurrent_steps: int,
        resources: Resources | None = None,
        metrics: PioneerMetrics | None = None,
    ) -> None:
        self._reporter = reporter
        # Handed to every attempt's context (context.Resources).
        self.resources = resources or Resources()
        self._max_concurrent_steps = max_concurrent_steps
        self._running: dict[str, _Running] = {}
        # Unserved unless pioneer's main serves it.
        self.metrics = PioneerMetrics() if metrics is None else metrics
        self.metrics.follow(slots=max_concurrent_steps, in_use=lambda: len(self._running))
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._closing = False
        self._slot_freed = asyncio.Event()

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def free_slots(self) -> int:
        return 0 if self._closing else self._max_concurrent_steps - len(self._running)

    async def wait_for_slot(self) -> None:
        """Returns once a slot is free (at once when one is)."""
        while self.free_slots <= 0 and not self._closing:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    def accept(self, request: StartStepRequest | StepTask, handler: StepHandler) -> bool:
        """Starts the attempt in the background; False when this token was already accepted."""
        info = _step_info(request)
        token = request.attempt_token
        if token in self._running or token in self._ended:
            return False
        if self._closing:
            raise RunnerFull("pioneer is shutting down")
        if len(self._running) >= self._max_concurrent_steps:
            raise RunnerFull(f"pioneer already runs {self._max_concurrent_steps} steps")
        ctx = StepContext(info, token, self._reporter, self.resources)
        # Pushed attempts (StartStep) carry no span of their own: the call's is their parent.
        traceparent = request.traceparent if isinstance(request, StepTask) else ""
        supervisor = asyncio.create_task(
            self._traced(ctx, handler, traceparent),
            name=f"step {info.execution_id}/{info.step_name}#{info.attempt}",
        )
        self._running[token] = _Running(ctx, supervisor)
        with jsonlog.about(ctx.execution_id, tracing.trace_id(traceparent)):
            log.info("step accepted", extra=_fields(ctx))
        return True

    def cancel(self, execution_id: str, step_name: str, attempt_token: str) -> bool:
        """Stops the attempt's handler; False when it is unknown, over, or not that step's."""
        running = self._running.get(attempt_token)
        if running is None:
            # Fences a StartStep that would arrive after its own cancellation.
            self._remember(attempt_token)
            return False
        ctx = running.ctx
        if (ctx.execution_id, ctx.step_name) != (execution_id, step_name):
            return False
        log.info("step cancel requested", extra=_fields(ctx))
        ctx.stop(StopReason.CANCELLED)
        return True

    async def close(self) -> None:
        """Stops every running step, reporting nothing: the engine reschedules them."""
        self._closing = True
        self._slot_freed.set()
        running = list(self._running.values())
        for entry in running:
            entry.ctx.stop(StopReason.SHUTDOWN)
            entry.supervisor.cancel()
        await asyncio.gather(*(entry.supervisor for entry in running), return_exceptions=True)

    async def _traced(self, ctx: StepContext, handler: StepHandler, traceparent: str) -> None:
        """`_supervise` in the attempt's own span ("run <step>", child of the attempt's span
        the engine handed out): the handler's work and every report it makes are in it, as
        is every line logged meanwhile."""
        attributes = {
            "discovery.execution_id": ctx.execution_id,
            "discovery.step": ctx.step_name,
            "discovery.attempt": ctx.info.attempt,
            "discovery.handler": ctx.info.handler,
        }
        with (
            jsonlog.about(ctx.execution_id, tracing.trace_id(traceparent)),
            tracing.attempt_run("pioneer", traceparent, f"run {ctx.step_name}", attributes),
        ):
            await self._supervise(ctx, handler)
            if ctx.completed:  # reported here or by the handler itself
                tracing.mark_outcome("success" if ctx.succeeded else "failed")
            elif ctx.stop_reason is not None:
                tracing.mark_outcome(ctx.stop_reason.value)

    async def _supervise(self, ctx: StepContext, handler: StepHandler) -> None:
        handler_task = asyncio.create_task(_call(handler, ctx))
        ctx.attach(handler_task)
        keep_alive = asyncio.create_task(_keep_alive(ctx))
        began = time.monotonic()
        try:
            outcome = await self._outcome(ctx, handler_task)
            self.metrics.ended(ctx.info.handler, _ended_as(ctx, outcome), time.monotonic() - began)
            keep_alive.cancel()
            if outcome is not None:
                await _complete(ctx, outcome)
        finally:
            keep_alive.cancel()
            handler_task.cancel()
            ctx.discard_reports()
            del self._running[ctx.attempt_token]
            self._remember(ctx.attempt_token)
            self._slot_freed.set()

    async def _outcome(
        self, ctx: StepContext, handler_task: asyncio.Task[Mapping[str, Any] | None]
    ) -> Outcome | None:
        """What to report once the handler has ended, or None when nothing is to be reported."""
        timeout = ctx.info.timeout_seconds
        done, _ = await asyncio.wait({handler_task}, timeout=timeout)
        if not done:
            ctx.stop(StopReason.TIMED_OUT)
            # A handler that swallows its cancellation is left behind, not waited for forever.
            await asyncio.wait({handler_task}, timeout=CANCEL_GRACE_SECONDS)
            if ctx.completed or ctx.stop_reason is not StopReason.TIMED_OUT:
                return None
            log.warning("step timed out", extra=_fields(ctx))
            return failure(
                "timeout", "TimeoutError", f"the step ran over its {timeout:g} s timeout"
            )
        stopped = ctx.stop_reason
        if stopped is not None:
            log.info("step stopped", extra={**_fields(ctx), "reason": stopped.value})
            _retrieve(handler_task)
            return None
        if handler_task.cancelled():
            # Only the handler itself can have cancelled its task: pioneer stops set a reason.
            return failure("step_failed", "CancelledError", "the step cancelled itself")
        error = handler_task.exception()
        if ctx.completed:
            if error is not None:
                log.warning(
                    "step raised after reporting completion",
                    extra={**_fields(ctx), "error": repr(error)},
                )
            return None
        if error is not None:
            reason = error.step_error_reason if isinstance(error, StepFailure) else "step_failed"
            log.info("step failed", extra={**_fields(ctx), "error": repr(error), "reason": reason})
            return failure(reason, type(error).__name__, str(error))
        return _outcome_from_return(handler_task.result())

    def _remember(self, token: str) -> None:
        self._ended[token] = None
        self._ended.move_to_end(token)
        while len(self._ended) > REMEMBERED_TOKENS:
            self._ended.popitem(last=False)


async def _call(handler: StepHandler, ctx: StepContext) -> Mapping[str, Any] | None:
    bind(ctx)
    return await handler(ctx)


async def _keep_alive(ctx: StepContext) -> None:
    """Heartbeats while the handler runs, so that a quiet step is not taken for dead."""
    while not ctx.completed:
        delay = ctx.seconds_to_next_heartbeat()
        if delay > 0:
            await asyncio.sleep(delay)
            continue
        try:
            await ctx.heartbeat()
        except (StepCancelled, StaleAttempt):
            return  # the context has stopped the handler
        except (EngineUnavailable, ReportRejected) as exc:
            # The engine decides whether the attempt is dead; the step keeps working meanwhile.
            log.warning("heartbeat not delivered", extra={**_fields(ctx), "error": str(exc)})


def _ended_as(ctx: StepContext, outcome: Outcome | None) -> str:
    """The attempt's outcome for the metrics: success, failed, timed_out or stopped."""
    if outcome is None:
        if not ctx.completed:
            return "stopped"
        return "success" if ctx.succeeded else "failed"  # the handler reported it itself
    if outcome.success:
        return "success"
    return "timed_out" if ctx.stop_reason is StopReason.TIMED_OUT else "failed"


async def _complete(ctx: StepContext, outcome: Outcome) -> None:
    try:
        await ctx.send_completion(outcome)
    except StaleAttempt as exc:
        log.info("completion refused as stale", extra={**_fields(ctx), "error": str(exc)})
    except (EngineUnavailable, ReportRejected) as exc:
        log.error("completion not delivered", extra={**_fields(ctx), "error": str(exc)})
    else:
        log.info("step completed", extra={**_fields(ctx), "success": outcome.success})


def _outcome_from_return(value: object) -> Outcome:
    """A returned dict is a completion body whose `success` defaults to true."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        return failure(
            "step_failed", "TypeError", f"the step returned {type(value).__name__}, not a dict"
        )
    try:
        return outcome_from_body({"success": True, **value})
    except ValueError as exc:
        return failure("step_failed", "ValueError", f"the step's result: {exc}")


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Marks the exception of a stopped handler as seen: it is expected, not worth a log line.
    if not task.cancelled():
        task.exception()


def _step_info(request: StartStepRequest | StepTask) -> StepInfo:
    for field in ("execution_id", "step_name", "handler", "attempt_token"):
        if not getattr(request, field):
            raise InvalidAttempt(field, "required")
    if request.attempt < 1:
        raise InvalidAttempt("attempt", "1-based, must be 1 or more")
    for field in ("timeout_seconds", "heartbeat_timeout_seconds"):
        value = getattr(request, field)
        if not math.isfinite(value) or value < 0:
            raise InvalidAttempt(field, "must be 0 (no bound) or a positive number of seconds")
    return StepInfo(
        execution_id=request.execution_id,
        step_name=request.step_name,
        handler=request.handler,
        attempt=request.attempt,
        input=dict_from_struct(request.input),
        timeout_seconds=request.timeout_seconds or None,
        heartbeat_timeout_seconds=request.heartbeat_timeout_seconds or None,
    )


def _fields(ctx: StepContext) -> dict[str, Any]:
    return {
        "execution_id": ctx.execution_id,
        "step": ctx.step_name,
        "attempt": ctx.info.attempt,
    }
