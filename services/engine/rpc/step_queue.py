"""StepQueueService: runners poll for ready attempts; everyone may look at the queue."""

from __future__ import annotations

from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc

from services.engine.domain.errors import InvalidArgument
from services.engine.rpc import convert
from services.engine.rpc.servicer import Context, Servicer, required_text

DEFAULT_POLL_SECONDS = 20.0
MAX_POLL_SECONDS = 60.0
MAX_POLL_ATTEMPTS = 100
MAX_HANDLERS = 200
# A poll answers this much before the caller's deadline, so that what it took reaches the
# runner instead of being lost with a call that already timed out.
POLL_DEADLINE_MARGIN_SECONDS = 1.0


class StepQueueServicer(Servicer, sq_grpc.StepQueueServiceServicer):
    async def PollStepAttempts(
        self, request: sq.PollStepAttemptsRequest, context: Context
    ) -> sq.PollStepAttemptsResponse:
        runner_id = required_text(request.runner_id, "runner_id")
        if not request.handlers:
            raise InvalidArgument("handlers", "name at least one handler")
        if len(request.handlers) > MAX_HANDLERS:
            raise InvalidArgument("handlers", f"at most {MAX_HANDLERS}")
        for i, handler in enumerate(request.handlers):
            required_text(handler, f"handlers[{i}]")
        if not 1 <= request.max_attempts <= MAX_POLL_ATTEMPTS:
            raise InvalidArgument("max_attempts", f"must be 1 to {MAX_POLL_ATTEMPTS}")
        if not 0 <= request.wait_seconds <= MAX_POLL_SECONDS:
            raise InvalidArgument("wait_seconds", f"must be 0 to {MAX_POLL_SECONDS:g}")
        wait = request.wait_seconds or DEFAULT_POLL_SECONDS
        left = context.time_remaining()
        if left is not None:
            wait = max(min(wait, left - POLL_DEADLINE_MARGIN_SECONDS), 0.0)
        assignments = await self._runner.dispatch.poll(
            runner_id,
            frozenset(request.handlers),
            request.max_attempts,
            wait,
            self._caller(context).runs_for,
        )
        return sq.PollStepAttemptsResponse(tasks=[convert.step_task(a) for a in assignments])

    async def TakeStepAttempt(
        self, request: sq.TakeStepAttemptRequest, context: Context
    ) -> sq.TakeStepAttemptResponse:
        assignment = await self._runner.dispatch.take(
            required_text(request.execution_id, "execution_id"),
            required_text(request.attempt_token, "attempt_token"),
            required_text(request.runner_id, "runner_id"),
        )
        if assignment is None:
            return sq.TakeStepAttemptResponse()
        return sq.TakeStepAttemptResponse(task=convert.step_task(assignment))

    async def GetStepQueue(
        self, request: sq.GetStepQueueRequest, context: Context
    ) -> sq.GetStepQueueResponse:
        mine, total = await self._runner.dispatch.queue_depths(self._caller(context).tenant)
        runners = await self._runner.dispatch.runners()
        return sq.GetStepQueueResponse(
            tenant=[convert.queue_depth(d) for d in mine],
            total=[convert.queue_depth(d) for d in total],
            runners=[convert.queue_runner(r) for r in runners],
        )
