"""Following one execution through WatchExecution as one unbroken stream: what the async and
the sync client's `watch` share.

The engine's stream can end before the execution does: the engine drops a watcher that fell
behind (RESOURCE_EXHAUSTED, reason WATCHER_TOO_SLOW), restarts or is out of reach
(UNAVAILABLE), or the deadline each stream segment carries runs out (DEADLINE_EXCEEDED). Each
time the stream is opened again with after_seq = the last seq delivered, after a capped
backoff when the engine is away, so the caller gets every event once, in order. Only an
engine that stays away past the retry budget, or a refusal (NOT_FOUND…), reaches the caller,
as EngineError.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es

from discovery_client.errors import EngineError

TERMINAL_EVENTS = frozenset(
    {
        ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED,
        ex_pb.EVENT_TYPE_WORKFLOW_FAILED,
        ex_pb.EVENT_TYPE_WORKFLOW_CANCELLED,
    }
)
# Reopen at once: the engine is fine, the stream simply ended early.
_RESUME_AT_ONCE = frozenset({"WATCHER_TOO_SLOW"})
# Reopen after a pause: the engine is restarting or out of reach.
_RESUME_LATER = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
BACKOFF_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0)
# A long stream is reopened now and then anyway: a connection that died silently (a laptop
# lid, a NAT) costs at most this long.
SEGMENT_SECONDS = 300.0
RETRY_BUDGET_SECONDS = 300.0

# What `watch` yields: the execution's snapshot first when no after_seq was given, then events.
Item = ex_pb.Execution | ex_pb.ExecutionEvent


@dataclass(frozen=True)
class Resumed:
    """Told to `on_resume` when the stream is opened again, and why."""

    after_seq: int | None
    why: str
    delay_seconds: float
    # The engine's reason, or the gRPC code's name.
    reason: str
    # A routine reopening (the segment deadline): nothing a person needs to hear about.
    routine: bool = False


class Gap(Exception):
    """An event past the next one (never expected: the log has no gaps)."""


class WatchState:
    """Where a watch is in the log, which of the stream's items to pass on, and how long to
    wait before the stream is opened again."""

    def __init__(self, execution_id: str, after_seq: int | None, retry_budget_seconds: float):
        self.execution_id = execution_id
        # None until a snapshot gives it, when no after_seq was asked for.
        self.last_seq = after_seq
        self.resumes = 0
        self.ended = False
        self._retry_budget_seconds = retry_budget_seconds
        self._failing_since: float | None = None
        self._failures = 0

    def request(self) -> es.WatchExecutionRequest:
        request = es.WatchExecutionRequest(execution_id=self.execution_id)
        if self.last_seq is not None:
            request.after_seq = self.last_seq
        return request

    def accept(self, response: es.WatchExecutionResponse) -> Item | None:
        """The item to pass on, or None for one already passed on; raises Gap."""
        if response.HasField("snapshot"):
            if self.last_seq is not None:
                return None  # only sent when none was asked for
            self.last_seq = response.snapshot.last_seq
            self._failing_since, self._failures = None, 0
            return response.snapshot
        event = response.event
        if self.last_seq is not None and event.seq <= self.last_seq:
            return None
        if self.last_seq is not None and event.seq != self.last_seq + 1:
            raise Gap(event.seq)
        self._failing_since, self._failures = None, 0
        self.last_seq = event.seq
        self.ended = event.type in TERMINAL_EVENTS
        return event

    def after_gap(self) -> Resumed:
        why = "the stream skipped events"
        error = EngineError(grpc.StatusCode.INTERNAL, why, reason="GAP")
        if self._failures:
            return self._later(error, why)
        # At once (the log replays what was skipped); after that as for an engine away, so
        # that a stream that keeps skipping is not reopened in a tight loop.
        self._failing_since, self._failures = time.monotonic(), 1
        return self._resumed(why, 0.0, error)

    def after_error(self, error: EngineError) -> Resumed:
        """How to go on after the stream failed; raises `error` when it is the caller's."""
        if error.code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return self._resumed("the stream reached its deadline", 0.0, error, routine=True)
        if error.reason in _RESUME_AT_ONCE:
            return self._resumed(error.message, 0.0, error)
        if error.code in _RESUME_LATER:
            # The cause once per outage; after that, only that it goes on.
            return self._later(error, error.describe() if not self._failures else "still away")
        raise error

    def _later(self, error: EngineError, why: str) -> Resumed:
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if now - self._failing_since > self._retry_budget_seconds:
            raise error
        delay = BACKOFF_SECONDS[min(self._failures, len(BACKOFF_SECONDS) - 1)]
        self._failures += 1
        return self._resumed(why, delay, error)

    def _resumed(
        self, why: str, delay: float, error: EngineError, *, routine: bool = False
    ) -> Resumed:
        self.resumes += 1
        return Resumed(self.last_seq, why, delay, error.reason, routine)
