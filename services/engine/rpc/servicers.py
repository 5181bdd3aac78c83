"""Thin gRPC servicers: unpack, call the runner, pack. Errors are the interceptor's job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from discovery.engine.v1 import execution_pb2 as pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import step_report_service_pb2_grpc as sr_grpc
from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc

from services.auth import WATCH_TOKEN_SECONDS, WATCHER, Principal, TokenAuthority, Unauthenticated
from services.engine.clock import utc_now
from services.engine.domain import execution as ex
from services.engine.domain.errors import (
    ExecutionNotFound,
    InvalidArgument,
    QuotaExceeded,
    RateLimited,
)
from services.engine.quotas import TenantUsage
from services.engine.rpc import convert
from services.engine.runner import Runner
from services.grpc_auth import principal
from services.ratelimit import RateLimiter

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
DEFAULT_PAGE = 100
MAX_PAGE = 1000
DEFAULT_WAIT_SECONDS = 30.0
READ_BLOB_MESSAGE_BYTES = 1024 * 1024
DEFAULT_POLL_SECONDS = 20.0
MAX_POLL_SECONDS = 60.0
MAX_POLL_ATTEMPTS = 100
MAX_HANDLERS = 200
# Progress reports in one ReportStepProgress or CompleteStep call.
MAX_REPORTS_PER_CALL = 1000
# A poll answers this much before the caller's deadline, so that what it took reaches the
# runner instead of being lost with a call that already timed out.
POLL_DEADLINE_MARGIN_SECONDS = 1.0


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > 200:
        raise InvalidArgument(field, "at most 200 characters")
    return value


def _at_most(
    reports: Sequence[pb.StepProgress], most: int, field: str
) -> Sequence[pb.StepProgress]:
    if len(reports) > most:
        raise InvalidArgument(field, f"at most {most} progress reports in one call")
    return reports


def _page_size(value: int) -> int:
    if value < 0 or value > MAX_PAGE:
        raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE}")
    return value or DEFAULT_PAGE


@dataclass(frozen=True)
class Limits:
    """How fast each principal may go: starts per tenant, progress per attempt; and what
    each tenant may keep (running executions, stored bytes)."""

    starts: RateLimiter
    progress: RateLimiter
    usage: TenantUsage


class _Servicer:
    def __init__(self, runner: Runner, authority: TokenAuthority, limits: Limits) -> None:
        self._runner = runner
        self._authority = authority
        self._limits = limits

    def _caller(self, context: Context) -> Principal:
        # The AuthInterceptor has checked the role already; this gives the scope.
        return principal(context, self._authority)

    def _tenant_of(self, context: Context, execution_id: str) -> str:
        """The caller's tenant, once it is clear it may see `execution_id` at all: a watcher
        token sees its one execution, and any other looks missing."""
        caller = self._caller(context)
        if caller.role == WATCHER and caller.execution_id != execution_id:
            raise ExecutionNotFound(execution_id)
        return caller.tenant


class WorkflowServicer(_Servicer, ws_grpc.WorkflowServiceServicer):
    async def CreateWorkflow(
        self, request: ws.CreateWorkflowRequest, context: Context
    ) -> ws.CreateWorkflowResponse:
        given = request.workflow
        if given.workflow_id or any(s.step_id for s in given.steps):
            raise InvalidArgument("workflow.workflow_id", "assigned by the engine; leave empty")
        workflow = await self._runner.create_workflow(
            given.name,
            given.description,
            convert.step_definitions(given),
            tenant=self._caller(context).tenant,
            input_schema=convert.input_schema(given),
        )
        return ws.CreateWorkflowResponse(workflow=convert.workflow(workflow))

    async def GetWorkflow(
        self, request: ws.GetWorkflowRequest, context: Context
    ) -> ws.GetWorkflowResponse:
        workflow = await self._runner.get_workflow(
            _required(request.workflow_id, "workflow_id"), tenant=self._caller(context).tenant
        )
        return ws.GetWorkflowResponse(workflow=convert.workflow(workflow))

    async def ListWorkflows(
        self, request: ws.ListWorkflowsRequest, context: Context
    ) -> ws.ListWorkflowsResponse:
        page = await self._runner.store.list_workflows(
            self._caller(context).tenant,
            _page_size(request.page_size),
            request.page_token,
            request.name,
        )
        return ws.ListWorkflowsResponse(
            workflows=[convert.workflow(w) for w in page.items],
            next_page_token=page.next_page_token,
        )


class ExecutionServicer(_Servicer, es_grpc.ExecutionServiceServicer):
    def _admit_start(self, caller: Principal) -> None:
        wait = self._limits.starts.take(caller.tenant)
        if wait:
            raise RateLimited(f"tenant {caller.tenant!r} is starting executions too fast", wait)

    def _watch_token(self, caller: Principal, execution_id: str) -> str:
        return self._authority.mint(
            subject=caller.subject,
            role=WATCHER,
            tenant=caller.tenant,
            ttl_seconds=WATCH_TOKEN_SECONDS,
            execution_id=execution_id,
        )

    async def _execution(self, state: ex.ExecutionState) -> Any:
        typical = await self._runner.typical_step_seconds(state.workflow.workflow_id)
        return convert.execution(state, typical, utc_now())

    async def _start(
        self, caller: Principal, request: es.StartExecutionRequest | es.ExecuteWorkflowRequest
    ) -> ex.ExecutionState:
        """A start within the tenant's quotas: its running executions and stored bytes (the
        input as it came, blobs and all). A start that repeats an earlier one by request_id
        is answered with that one, over the quotas or not."""
        workflow_id = _required(request.workflow_id, "workflow_id")
        usage = self._limits.usage
        try:
            reserved = await usage.admit_start(caller.tenant, request.input.ByteSize())
        except QuotaExceeded:
            if not request.request_id or not await self._runner.store.find_by_request_id(
                caller.tenant, request.request_id
            ):
                raise
            reserved = None
        began = utc_now()
        try:
            state = await self._runner.start(
                workflow_id,
                convert.from_struct(request.input),
                request.manual,
                request.request_id,
                tenant=caller.tenant,
                priority=request.priority or ex.DEFAULT_PRIORITY,
            )
        except BaseException:
            if reserved is not None:
                usage.dropped(reserved)
            raise
        if reserved is not None:
            # Created before this call: an earlier start answered again, nothing new kept.
            if state.created_at < began:
                usage.dropped(reserved)
            else:
                usage.stored(reserved)
        return state

    async def StartExecution(
        self, request: es.StartExecutionRequest, context: Context
    ) -> es.StartExecutionResponse:
        caller = self._caller(context)
        self._admit_start(caller)
        state = await self._start(caller, request)
        return es.StartExecutionResponse(
            execution=await self._execution(state),
            watch_token=self._watch_token(caller, state.execution_id),
        )

    async def ExecuteWorkflow(
        self, request: es.ExecuteWorkflowRequest, context: Context
    ) -> es.ExecuteWorkflowResponse:
        if request.wait_seconds < 0:
            raise InvalidArgument("wait_seconds", "must be >= 0")
        caller = self._caller(context)
        self._admit_start(caller)
        started = await self._start(caller, request)
        finished = started.is_terminal or await self._runner.wait_for_end(
            started.execution_id,
            started.last_seq,
            request.wait_seconds or DEFAULT_WAIT_SECONDS,
            tenant=caller.tenant,
        )
        state = await self._runner.get(started.execution_id, tenant=caller.tenant)
        return es.ExecuteWorkflowResponse(
            execution=await self._execution(state),
            finished=finished and state.is_terminal,
            watch_token=self._watch_token(caller, state.execution_id),
        )

    async def GetExecution(
        self, request: es.GetExecutionRequest, context: Context
    ) -> es.GetExecutionResponse:
        execution_id = _required(request.execution_id, "execution_id")
        state = await self._runner.get(execution_id, tenant=self._tenant_of(context, execution_id))
        return es.GetExecutionResponse(execution=await self._execution(state))

    async def ListExecutions(
        self, request: es.ListExecutionsRequest, context: Context
    ) -> es.ListExecutionsResponse:
        page = await self._runner.store.list_executions(
            self._caller(context).tenant,
            _page_size(request.page_size),
            request.page_token,
            request.workflow_id,
        )
        now = utc_now()
        return es.ListExecutionsResponse(
            executions=[convert.execution(s, {}, now, summary=True) for s in page.items],
            next_page_token=page.next_page_token,
        )

    async def ListExecutionSteps(
        self, request: es.ListExecutionStepsRequest, context: Context
    ) -> es.ListExecutionStepsResponse:
        execution_id = _required(request.execution_id, "execution_id")
        state = await self._runner.get(execution_id, tenant=self._tenant_of(context, execution_id))
        return es.ListExecutionStepsResponse(steps=convert.execution_steps(state))

    async def WatchExecution(
        self, request: es.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[es.WatchExecutionResponse]:
        after = request.after_seq if request.HasField("after_seq") else None
        execution_id = _required(request.execution_id, "execution_id")
        tenant = self._tenant_of(context, execution_id)
        last = after
        try:
            # A stream lives no longer than the token it was opened with.
            async with asyncio.timeout(self._caller(context).seconds_left()):
                async for item in self._runner.watch(execution_id, after, tenant=tenant):
                    if isinstance(item, ex.Event):
                        last = item.seq
                        yield es.WatchExecutionResponse(event=convert.event(item))
                    else:
                        last = item.last_seq
                        yield es.WatchExecutionResponse(snapshot=await self._execution(item))
        except TimeoutError:
            raise Unauthenticated(
                f"the token has expired; watch again with a fresh one and after_seq={last}",
                "TOKEN_EXPIRED",
            ) from None

    async def CancelExecution(
        self, request: es.CancelExecutionRequest, context: Context
    ) -> es.CancelExecutionResponse:
        if len(request.reason) > 1000:
            raise InvalidArgument("reason", "at most 1000 characters")
        execution_id = _required(request.execution_id, "execution_id")
        state = await self._runner.cancel(
            execution_id, request.reason, tenant=self._caller(context).tenant
        )
        return es.CancelExecutionResponse(execution=await self._execution(state))

    async def AdvanceExecution(
        self, request: es.AdvanceExecutionRequest, context: Context
    ) -> es.AdvanceExecutionResponse:
        state = await self._runner.advance(
            _required(request.execution_id, "execution_id"),
            convert.from_struct(request.data),
            tenant=self._caller(context).tenant,
        )
        return es.AdvanceExecutionResponse(execution=await self._execution(state))


class StepReportServicer(_Servicer, sr_grpc.StepReportServiceServicer):
    # A runner is bound to its step by the attempt token alone: it holds no tenant.
    async def ReportStepProgress(
        self, request: sr.ReportStepProgressRequest, context: Context
    ) -> sr.ReportStepProgressResponse:
        reports = [request.progress] if request.HasField("progress") else []
        reports.extend(_at_most(request.more_progress, MAX_REPORTS_PER_CALL, "more_progress"))
        cancelled = await self._runner.report_progress(
            _required(request.execution_id, "execution_id"),
            _required(request.step_name, "step_name"),
            _required(request.attempt_token, "attempt_token"),
            self._within_rate(request.attempt_token, reports),
            tenant=self._caller(context).runs_for,
        )
        return sr.ReportStepProgressResponse(cancel_requested=cancelled)

    async def CompleteStep(
        self, request: sr.CompleteStepRequest, context: Context
    ) -> sr.CompleteStepResponse:
        error = None
        if request.HasField("error"):
            error = {
                "reason": request.error.reason or "step_failed",
                "type": request.error.type,
                "message": request.error.message[:4000],
            }
        await self._runner.complete_step(
            _required(request.execution_id, "execution_id"),
            _required(request.step_name, "step_name"),
            _required(request.attempt_token, "attempt_token"),
            request.success,
            convert.from_struct(request.result),
            error,
            progress=self._within_rate(
                request.attempt_token, _at_most(request.progress, MAX_REPORTS_PER_CALL, "progress")
            ),
            tenant=self._caller(context).runs_for,
        )
        return sr.CompleteStepResponse()

    def _within_rate(
        self, attempt_token: str, reports: Iterable[pb.StepProgress]
    ) -> list[dict[str, Any]]:
        """The reports within the attempt's progress rate. The others are faster than the log
        should grow: kept as the heartbeat they also are; the step's next progress within
        the rate, and its completion, say where it got to."""
        return [
            convert.progress_to_dict(report)
            for report in reports
            if not self._limits.progress.take(attempt_token)
        ]

    async def ReadBlob(
        self, request: sr.ReadBlobRequest, context: Context
    ) -> AsyncIterator[sr.ReadBlobResponse]:
        chunks = await self._runner.read_blob(
            _required(request.execution_id, "execution_id"),
            _required(request.attempt_token, "attempt_token"),
            _required(request.blob_id, "blob_id"),
            tenant=self._caller(context).runs_for,
        )
        async for chunk in chunks:
            # Small messages fit any client's default 4 MiB receive cap.
            for offset in range(0, len(chunk), READ_BLOB_MESSAGE_BYTES):
                yield sr.ReadBlobResponse(chunk=chunk[offset : offset + READ_BLOB_MESSAGE_BYTES])

    async def WriteBlob(
        self, requests: AsyncIterator[sr.WriteBlobRequest], context: Context
    ) -> sr.WriteBlobResponse:
        first = await anext(aiter(requests), None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("header", "the first message must be the header")

        execution_id = _required(first.header.execution_id, "header.execution_id")
        # The runner holds no tenant: the blob counts against its execution's. An unknown
        # execution is the runner's own refusal (write_blob), before any chunk is kept.
        execution = await self._runner.store.load_execution(execution_id)
        tenant = execution.workflow.tenant_id if execution is not None else None
        usage = self._limits.usage

        async def chunks() -> AsyncIterator[bytes]:
            size = 0
            async for request in requests:
                if request.HasField("header"):
                    raise InvalidArgument("header", "only the first message is a header")
                size += len(request.chunk)
                if tenant is not None:
                    usage.check_bytes(tenant, size)  # before anything is stored
                yield request.chunk

        ref = await self._runner.write_blob(
            execution_id,
            _required(first.header.attempt_token, "header.attempt_token"),
            chunks(),
            tenant=self._caller(context).runs_for,
        )
        if tenant is not None:
            usage.add_bytes(tenant, ref.size_bytes)
        return sr.WriteBlobResponse(
            blob_id=ref.blob_id, size_bytes=ref.size_bytes, sha256=ref.sha256
        )


class StepQueueServicer(_Servicer, sq_grpc.StepQueueServiceServicer):
    async def PollStepAttempts(
        self, request: sq.PollStepAttemptsRequest, context: Context
    ) -> sq.PollStepAttemptsResponse:
        runner_id = _required(request.runner_id, "runner_id")
        if not request.handlers:
            raise InvalidArgument("handlers", "name at least one handler")
        if len(request.handlers) > MAX_HANDLERS:
            raise InvalidArgument("handlers", f"at most {MAX_HANDLERS}")
        for i, handler in enumerate(request.handlers):
            _required(handler, f"handlers[{i}]")
        if not 1 <= request.max_attempts <= MAX_POLL_ATTEMPTS:
            raise InvalidArgument("max_attempts", f"must be 1 to {MAX_POLL_ATTEMPTS}")
        if not 0 <= request.wait_seconds <= MAX_POLL_SECONDS:
            raise InvalidArgument("wait_seconds", f"must be 0 to {MAX_POLL_SECONDS:g}")
        wait = request.wait_seconds or DEFAULT_POLL_SECONDS
        left = context.time_remaining()
        if left is not None:
            wait = max(min(wait, left - POLL_DEADLINE_MARGIN_SECONDS), 0.0)
        assignments = await self._runner.poll(
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
        assignment = await self._runner.take(
            _required(request.execution_id, "execution_id"),
            _required(request.attempt_token, "attempt_token"),
            _required(request.runner_id, "runner_id"),
        )
        if assignment is None:
            return sq.TakeStepAttemptResponse()
        return sq.TakeStepAttemptResponse(task=convert.step_task(assignment))

    async def GetStepQueue(
        self, request: sq.GetStepQueueRequest, context: Context
    ) -> sq.GetStepQueueResponse:
        mine, total = await self._runner.queue_depths(self._caller(context).tenant)
        runners = await self._runner.runners()
        return sq.GetStepQueueResponse(
            tenant=[convert.queue_depth(d) for d in mine],
            total=[convert.queue_depth(d) for d in total],
            runners=[convert.queue_runner(r) for r in runners],
        )
