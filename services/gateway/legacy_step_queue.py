"""The step queue in JSON, as operators and HTTP runners read it: `GET /queue` (what waits,
by handler, and which runners poll) and the attempts `POST /step-queue/poll` hands a runner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from discovery.engine.v1 import step_queue_service_pb2 as sq
from google.protobuf import timestamp_pb2

from services.gateway.legacy_values import iso, plain_struct


def _is_set(value: timestamp_pb2.Timestamp) -> bool:
    return bool(value.seconds or value.nanos)


def _depth(depth: sq.QueueDepth, now: datetime) -> dict[str, Any]:
    oldest = depth.oldest_queue_time
    waited = None
    if _is_set(oldest):
        waited = max((now - oldest.ToDatetime(tzinfo=UTC)).total_seconds(), 0.0)
    return {
        "handler": depth.handler,
        "ready": depth.ready,
        "oldest_queued_at": iso(oldest),
        "oldest_wait_seconds": None if waited is None else round(waited, 3),
    }


def step_queue(queue: sq.GetStepQueueResponse, now: datetime) -> dict[str, Any]:
    """`GET /queue`: ready attempts by handler for the caller's tenant and for every tenant
    together (no tenant named), with how long the oldest has waited at `now`, and the runners
    that polled in the last minutes with the free slots they last asked work for."""
    return {
        "tenant": [_depth(d, now) for d in queue.tenant],
        "total": [_depth(d, now) for d in queue.total],
        "runners": [
            {
                "runner_id": runner.runner_id,
                "handlers": list(runner.handlers),
                "free_slots": runner.free_slots,
                "last_poll_at": iso(runner.last_poll_time),
            }
            for runner in queue.runners
        ],
    }


def step_attempts(tasks: list[sq.StepTask]) -> dict[str, Any]:
    """`POST /step-queue/poll`'s answer: the attempts taken for the runner, each with the
    routes it reports to (with its `attempt_token` in `X-Attempt-Token`)."""
    return {"attempts": [_step_attempt(task) for task in tasks]}


def _step_attempt(task: sq.StepTask) -> dict[str, Any]:
    base = f"/executions/{quote(task.execution_id, safe='')}/steps/{quote(task.step_name, safe='')}"
    return {
        "execution_id": task.execution_id,
        "step_name": task.step_name,
        "handler": task.handler,
        "attempt": task.attempt,
        "attempt_token": task.attempt_token,
        "input": plain_struct(task.input),
        "timeout_seconds": task.timeout_seconds,
        "heartbeat_timeout_seconds": task.heartbeat_timeout_seconds,
        "queued_at": iso(task.queue_time),
        "started_at": iso(task.start_time),
        "report_urls": {"progress": f"{base}/progress", "complete": f"{base}/complete"},
    }
