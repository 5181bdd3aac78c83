"""What follows a logged change, outside the execution itself: the step queue (an attempt
queued goes in, one taken or ended goes out), the in-process runner that took an attempt told
that it ended, step durations recorded for estimates, the metrics, the span of each attempt
that ended (attempt_spans.py), and a log line for what matters."""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.engine import attempt_spans
from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.estimates import StepDurations
from services.engine.metrics import EngineMetrics
from services.engine.step_queue import ReadyAttempt, StepQueue

log = logging.getLogger(__name__)


class Effects:
    def __init__(self, queue: StepQueue, durations: StepDurations, metrics: EngineMetrics) -> None:
        self._queue = queue
        self._durations = durations
        self._metrics = metrics
        # runner_id -> told the token of each attempt it took once that attempt ends here
        # (an in-process runner, such as the webhook pusher, counts its attempts in flight).
        self._end_listeners: dict[str, Callable[[str], None]] = {}

    def after(self, state: ex.ExecutionState, events: list[ev.Event]) -> None:
        """The effects of `events`, just logged, of the execution now at `state`."""
        self._metrics.after(state, events)
        attempt_spans.after(state, events)
        for event in events:
            level = _log_level(event)
            if log.isEnabledFor(level):
                extra = {"execution_id": state.execution_id, "seq": event.seq, "event": event.type}
                log.log(level, event.type, extra=extra)
            if event.type == ev.STEP_QUEUED:
                queued = ev.data_of(event, ev.StepQueuedData)
                attempt = state.attempt(queued["order"], queued["attempt"])
                if attempt.status == ex.ATTEMPT_QUEUED:
                    self.enqueue(state, attempt)
            elif event.type == ev.STEP_STARTED:
                # Taken, maybe by a runner of another engine: no poll here may take it again.
                started = ev.data_of(event, ev.StepStartedData)
                attempt = state.attempt(started["order"], started["attempt"])
                self._queue.discard(attempt.token)
            elif event.type == ev.STEP_FINISHED:
                # A runner running the attempt learns that it ended from its next report.
                finished = ev.data_of(event, ev.StepFinishedData)
                attempt = state.attempt(finished["order"], finished["attempt"])
                self._queue.discard(attempt.token)
                listener = self._end_listeners.get(attempt.runner_id or "")
                if listener is not None:
                    listener(attempt.token)
                if attempt.status == ex.ATTEMPT_SUCCESS and attempt.finished_at is not None:
                    # From the queue on: estimates count the wait for a runner too.
                    self._durations.record(
                        state.workflow.workflow_id,
                        attempt.step_name,
                        (attempt.finished_at - attempt.queued_at).total_seconds(),
                    )

    def enqueue(self, state: ex.ExecutionState, attempt: ex.Attempt) -> None:
        self._queue.put(
            ReadyAttempt(
                execution_id=state.execution_id,
                token=attempt.token,
                handler=state.workflow.steps[attempt.order - 1].handler,
                tenant=state.workflow.tenant_id,
                priority=state.priority,
                queued_at=attempt.queued_at,
                order=attempt.order,
            )
        )

    def on_attempt_end(self, runner_id: str, listener: Callable[[str], None] | None) -> None:
        """Calls `listener(attempt_token)` whenever an attempt `runner_id` took ends here,
        however it ends (finished, failed, timed out, cancelled); None stops it."""
        if listener is None:
            self._end_listeners.pop(runner_id, None)
        else:
            self._end_listeners[runner_id] = listener


def _log_level(event: ev.Event) -> int:
    """How executions begin and end, and steps that did not succeed, are logged at info; the
    rest is in the event log, and at debug here (a line per event was a tenth of the
    engine's time under load)."""
    if event.type.startswith("workflow_"):
        return logging.INFO
    if (
        event.type == ev.STEP_FINISHED
        and ev.data_of(event, ev.StepFinishedData)["status"] != ex.ATTEMPT_SUCCESS
    ):
        return logging.INFO
    return logging.DEBUG
