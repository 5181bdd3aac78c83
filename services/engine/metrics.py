"""The engine's Prometheus metrics (services/metrics.py serves them on ENGINE_METRICS_PORT).

Executions and steps are counted from the events this engine logs (`after`, called with the
effects of every change), so that each is counted once, by the engine that committed it,
however many engines follow the log. What is true at scrape time (queue depth, watchers,
executions held) is read then. Labels are bounded: workflow names and step handlers through
BoundedLabel, outcomes and error reasons from fixed sets; never an execution id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.events import Event
from services.engine.store.repository import Swept
from services.metrics import SECONDS_BUCKETS, BoundedLabel, new_registry

OUTCOMES = {
    ev.WORKFLOW_COMPLETED: "completed",
    ev.WORKFLOW_FAILED: "failed",
    ev.WORKFLOW_CANCELLED: "cancelled",
}
COMMIT_EVENTS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = new_registry() if registry is None else registry
        r = self.registry
        self._workflow = BoundedLabel()
        self._handler = BoundedLabel()
        self.started = Counter(
            "discovery_executions_started",
            "Executions started, by workflow.",
            ["workflow"],
            registry=r,
        )
        self.retried = Counter(
            "discovery_executions_retried",
            "Failed or cancelled executions taken back to running (RetryExecution), by workflow.",
            ["workflow"],
            registry=r,
        )
        self.finished = Counter(
            "discovery_executions_finished",
            "Executions ended, by workflow and outcome (completed, failed, cancelled).",
            ["workflow", "outcome"],
            registry=r,
        )
        self.execution_seconds = Histogram(
            "discovery_execution_duration_seconds",
            "From an execution's start to its end, by workflow and outcome.",
            ["workflow", "outcome"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "discovery_step_attempts",
            "Step attempts ended, by handler and outcome (success, failed, timed_out, cancelled).",
            ["handler", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "discovery_step_retries",
            "Step attempts queued again after one that did not succeed, by handler.",
            ["handler"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "discovery_step_duration_seconds",
            "From a runner's take of a step attempt to its end, by handler and outcome.",
            ["handler", "outcome"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "discovery_step_queue_wait_seconds",
            "From a step attempt's queueing to a runner's take of it, by handler.",
            ["handler"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "discovery_event_log_commit_seconds",
            "One commit of the event log (events, status documents and the lease renewal).",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.commit_events = Histogram(
            "discovery_event_log_commit_events",
            "Events written by one commit of the event log (the group commit's batch).",
            buckets=COMMIT_EVENTS_BUCKETS,
            registry=r,
        )
        self.delivery_lag = Histogram(
            "discovery_event_delivery_lag_seconds",
            "From an event's append to its hand-over to a live watcher's stream.",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.rpc_errors = Counter(
            "discovery_rpc_errors",
            "Calls answered with an error, by gRPC code and reason (RESOURCE_EXHAUSTED with"
            " RATE_LIMITED or QUOTA_EXCEEDED: refusals by the rate limits and quotas).",
            ["code", "reason"],
            registry=r,
        )
        self.takeovers = Counter(
            "discovery_lease_takeovers",
            "Executions this engine took over: from an engine gone, fenced, or from an"
            " earlier process with this engine id.",
            registry=r,
        )
        self.deleted = Counter(
            "discovery_retention_deleted",
            "What retention deleted (DISCOVERY_RETENTION_DAYS): ended executions, their events,"
            " and blobs (theirs, or stranded by a start that never came).",
            ["kind"],
            registry=r,
        )
        self.deleted_bytes = Counter(
            "discovery_retention_deleted_bytes",
            "Bytes of the blobs retention deleted.",
            registry=r,
        )
        self.scheduled_runs = Counter(
            "discovery_scheduled_runs",
            "Times of cron schedules, by outcome: started (an execution), skipped (overlap,"
            " catch-up limit, or a start refused); counted by the engine that recorded them.",
            ["outcome"],
            registry=r,
        )
        self.watchers = Gauge(
            "discovery_watchers",
            "Live WatchExecution streams on this engine.",
            registry=r,
        )
        self.held = Gauge(
            "discovery_executions_held",
            "Executions not ended that this engine holds in memory.",
            registry=r,
        )
        self.pollers = Gauge(
            "discovery_step_queue_pollers",
            "Runners' polls waiting for work on this engine.",
            registry=r,
        )

    def follow(
        self,
        *,
        watchers: Callable[[], int],
        held: Callable[[], int],
        pollers: Callable[[], int],
        queued: Callable[[], Mapping[str, int]],
    ) -> None:
        """What is read at scrape time."""
        self.watchers.set_function(watchers)
        self.held.set_function(held)
        self.pollers.set_function(pollers)
        self.registry.register(_QueueDepth(queued, self._handler))

    def after(self, state: ex.ExecutionState, events: Iterable[Event]) -> None:
        """Counts what `events`, just logged by this engine, tell."""
        workflow = self._workflow(state.workflow.name)
        for event in events:
            kind = event.type
            if kind == ev.WORKFLOW_STARTED:
                self.started.labels(workflow).inc()
            elif kind in OUTCOMES:
                outcome = OUTCOMES[kind]
                self.finished.labels(workflow, outcome).inc()
                self.execution_seconds.labels(workflow, outcome).observe(
                    _seconds(state.created_at, event.time)
                )
            elif kind == ev.WORKFLOW_RETRIED:
                self.retried.labels(workflow).inc()
            elif kind == ev.STEP_QUEUED:
                queued = ev.data_of(event, ev.StepQueuedData)
                # A step run again by a retry of the execution starts its count afresh.
                if state.tries(queued["order"]) > 1:
                    self.retries.labels(self._handler(queued["handler"])).inc()
            elif kind == ev.STEP_STARTED:
                started = ev.data_of(event, ev.StepStartedData)
                handler = self._handler(state.workflow.steps[started["order"] - 1].handler)
                if "queued_seconds" in started:
                    self.queue_wait_seconds.labels(handler).observe(started["queued_seconds"])
            elif kind == ev.STEP_FINISHED:
                finished = ev.data_of(event, ev.StepFinishedData)
                handler = self._handler(state.workflow.steps[finished["order"] - 1].handler)
                outcome = finished["status"]
                self.attempts.labels(handler, outcome).inc()
                self.step_seconds.labels(handler, outcome).observe(finished["duration_seconds"])

    def commit(self, events: int, seconds: float) -> None:
        self.commit_events.observe(events)
        self.commit_seconds.observe(seconds)

    def delivered(self, event: Event, now: datetime) -> None:
        self.delivery_lag.observe(_seconds(event.time, now))

    def error(self, code: str, reason: str) -> None:
        self.rpc_errors.labels(code, reason).inc()

    def scheduled(self, *, started: int, skipped: int) -> None:
        self.scheduled_runs.labels("started").inc(started)
        self.scheduled_runs.labels("skipped").inc(skipped)

    def swept(self, swept: Swept) -> None:
        self.deleted.labels("executions").inc(swept.executions)
        self.deleted.labels("events").inc(swept.events)
        self.deleted.labels("blobs").inc(swept.blobs)
        self.deleted_bytes.inc(swept.blob_bytes)


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


class _QueueDepth(Collector):
    """Step attempts waiting in this engine's queue, by handler, at scrape time."""

    def __init__(self, queued: Callable[[], Mapping[str, int]], label: BoundedLabel) -> None:
        self._queued = queued
        self._label = label

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "discovery_step_queue_depth",
            "Step attempts waiting in this engine's queue for a runner, by handler.",
            labels=["handler"],
        )
        depth: dict[str, int] = {}
        for handler, count in self._queued().items():
            name = self._label(handler)
            depth[name] = depth.get(name, 0) + count
        for handler, count in sorted(depth.items()):
            family.add_metric([handler], count)
        yield family
