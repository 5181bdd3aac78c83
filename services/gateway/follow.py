"""Following one execution's log through WatchExecution, as one unbroken stream of events.

The engine's stream can end before the execution does: the engine drops a watcher that fell
behind (RESOURCE_EXHAUSTED, reason WATCHER_TOO_SLOW, metadata last_seq), restarts
(UNAVAILABLE), or the call reaches the deadline every call carries. Each time the stream is
opened again after the last seq delivered, so the caller sees every event once, in order,
and never learns it happened. Only an engine that stays away past the retry budget, or a
refusal (NOT_FOUND…), reaches the caller, as `EngineError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb

from services.gateway.engine import EngineClient
from services.gateway.errors import EngineError
from services.gateway.legacy import TERMINAL_EVENTS

log = logging.getLogger(__name__)

# The stream ended without a fault of the engine's: open it again at once.
_RESUME_AT_ONCE = frozenset({"WATCHER_TOO_SLOW"})
# The engine is (for now) out of reach: open it again after a pause, within the budget.
_RESUME_LATER = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
_BACKOFF_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0)


class Follower:
    def __init__(
        self,
        engine: EngineClient,
        execution_id: str,
        after_seq: int,
        *,
        segment_seconds: float,
        retry_seconds: float,
    ) -> None:
        self.execution_id = execution_id
        self.last_seq = after_seq
        self.resumes = 0
        self._engine = engine
        self._segment_seconds = segment_seconds
        self._retry_seconds = retry_seconds

    async def events(self) -> AsyncGenerator[ex_pb.ExecutionEvent, None]:
        """Every event after `after_seq` up to the terminal one; ends after it."""
        failing_since: float | None = None
        failures = 0
        while True:
            call = self._engine.watch(self.execution_id, self.last_seq, self._segment_seconds)
            try:
                async for item in call:
                    if not item.HasField("event"):
                        continue  # a snapshot: only sent when no after_seq is given
                    event = item.event
                    if event.seq <= self.last_seq:
                        continue
                    if event.seq != self.last_seq + 1:
                        raise _Gap(event.seq)
                    failing_since, failures = None, 0
                    self.last_seq = event.seq
                    yield event
                    if event.type in TERMINAL_EVENTS:
                        return
                return  # the engine ends a stream only after the terminal event
            except _Gap as gap:
                # Never expected (the engine's log has no gaps); replayed from the log.
                log.warning(
                    "gap in the watch stream",
                    extra={"execution_id": self.execution_id, "seq": gap.seq},
                )
                error = EngineError(
                    grpc.StatusCode.INTERNAL, "the event stream skipped events", reason="GAP"
                )
                retry_later = True
            except grpc.aio.AioRpcError as exc:
                error = EngineError.from_rpc(exc)
                if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                    retry_later = False  # our own deadline on one segment; not a failure
                elif error.reason in _RESUME_AT_ONCE:
                    retry_later = False
                elif exc.code() in _RESUME_LATER:
                    retry_later = True
                else:
                    raise error from None
            finally:
                call.cancel()
            if retry_later:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self._retry_seconds:
                    raise error
                await asyncio.sleep(_BACKOFF_SECONDS[min(failures, len(_BACKOFF_SECONDS) - 1)])
                failures += 1
            self.resumes += 1
            log.info(
                "watch resumed",
                extra={
                    "execution_id": self.execution_id,
                    "after_seq": self.last_seq,
                    "reason": error.reason,
                },
            )


class _Gap(Exception):
    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq
