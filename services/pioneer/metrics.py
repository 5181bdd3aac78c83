"""Pioneer's Prometheus metrics (services/metrics.py serves them on PIONEER_METRICS_PORT): its
slots, and each attempt it ran, timed from its start here to the handler's end, by handler and
outcome. Handlers are the registry's (a bounded set); never an execution id."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.metrics import SECONDS_BUCKETS, BoundedLabel, new_registry


class PioneerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = new_registry() if registry is None else registry
        r = self.registry
        self._handler = BoundedLabel()
        self.slots = Gauge(
            "discovery_pioneer_slots", "Step attempts pioneer may run at once.", registry=r
        )
        self.slots_in_use = Gauge(
            "discovery_pioneer_slots_in_use", "Step attempts pioneer runs now.", registry=r
        )
        self.attempts = Counter(
            "discovery_pioneer_attempts",
            "Step attempts ended here, by handler and outcome: as reported (success, failed,"
            " timed_out; by pioneer or the handler itself), or stopped by pioneer (cancelled,"
            " stale, shutting down: nothing reported).",
            ["handler", "outcome"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "discovery_pioneer_step_duration_seconds",
            "From an attempt's start here to its handler's end, by handler and outcome.",
            ["handler", "outcome"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )

    def follow(self, *, slots: int, in_use: Callable[[], int]) -> None:
        self.slots.set(slots)
        self.slots_in_use.set_function(in_use)

    def ended(self, handler: str, outcome: str, seconds: float) -> None:
        label = self._handler(handler)
        self.attempts.labels(label, outcome).inc()
        self.step_seconds.labels(label, outcome).observe(seconds)
