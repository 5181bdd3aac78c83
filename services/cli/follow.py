"""Following one execution through WatchExecution, as one unbroken stream.

The engine's stream can end before the execution does: the engine drops a watcher that
fell behind (RESOURCE_EXHAUSTED, reason WATCHER_TOO_SLOW), restarts or is out of reach
(UNAVAILABLE), or the deadline each stream segment carries runs out (DEADLINE_EXCEEDED).
Each time the stream is opened again with after_seq = the last seq seen, after a capped
backoff when the engine is away, so the caller sees every event once, in order. Only an
engine that stays away past the retry budget, or a refusal (NOT_FOUND…), reaches the caller,
as EngineError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb

from services.cli.client import EngineClient
from services.cli.errors import EngineError

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
BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)
# A long stream is reopened now and then anyway: a connection that died silently (a laptop
# lid, a NAT) costs at most this long.
SEGMENT_SECONDS = 300.0
RETRY_BUDGET_SECONDS = 300.0


@dataclass(frozen=True)
class Resumed:
    """Told to the view when the stream is reopened, so the user knows why it paused."""

    after_seq: int | None
    why: str
    delay_seconds: float
    # A routine reopening (the segment deadline): nothing a user needs to hear about.
    routine: bool = False


Item = ex_pb.Execution | ex_pb.ExecutionEvent


class Follower:
    def __init__(
        self,
        client: EngineClient,
        execution_id: str,
        after_seq: int | None,
        *,
        on_resume: Callable[[Resumed], None] = lambda _: None,
        segment_seconds: float = SEGMENT_SECONDS,
        retry_budget_seconds: float = RETRY_BUDGET_SECONDS,
    ) -> None:
        self.execution_id = execution_id
        # None until a snapshot gives it, when no after_seq was asked for.
        self.last_seq = after_seq
        self.resumes = 0
        self._client = client
        self._on_resume = on_resume
        self._segment_seconds = segment_seconds
        self._retry_budget_seconds = retry_budget_seconds

    def items(self) -> Iterator[Item]:
        """The snapshot first (when no after_seq was given), then every event after it up
        to the terminal one. Ends early only when the execution had already ended."""
        failing_since: float | None = None
        failures = 0
        while True:
            routine = False
            stream = self._client.watch(self.execution_id, self.last_seq, self._segment_seconds)
            try:
                for item in stream:
                    if item.HasField("snapshot"):
                        if self.last_seq is not None:
                            continue  # only sent when we asked for none
                        self.last_seq = item.snapshot.last_seq
                        failing_since, failures = None, 0
                        yield item.snapshot
                        continue
                    event = item.event
                    if self.last_seq is not None and event.seq <= self.last_seq:
                        continue  # already shown
                    if self.last_seq is not None and event.seq != self.last_seq + 1:
                        break  # a gap (never expected): reopen and let the replay fill it
                    failing_since, failures = None, 0
                    self.last_seq = event.seq
                    yield event
                    if event.type in TERMINAL_EVENTS:
                        return
                else:
                    # The engine ends a stream after the terminal event, or at once when
                    # the execution was over before after_seq.
                    return
                why, delay = "the stream skipped events", 0.0
            except grpc.RpcError as exc:
                error = EngineError.from_rpc(exc, self._client.target)
                if error.code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    why, delay, routine = "the stream reached its deadline", 0.0, True
                elif error.reason in _RESUME_AT_ONCE:
                    why, delay = error.message, 0.0
                elif error.code in _RESUME_LATER:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > self._retry_budget_seconds:
                        raise error from None
                    # The cause once per outage; after that, only that it goes on.
                    why = error.describe() if failures == 0 else "still unreachable"
                    delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                    failures += 1
                else:
                    raise error from None
            finally:
                stream.cancel()
            self.resumes += 1
            self._on_resume(Resumed(self.last_seq, why, delay, routine))
            time.sleep(delay)
