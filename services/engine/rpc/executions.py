"""ExecutionService: start, follow and steer executions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc

from services.auth import WATCH_TOKEN_SECONDS, WATCHER, Principal, Unauthenticated
from services.engine.clock import utc_now
from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.errors import InvalidArgument, QuotaExceeded, RateLimited
from services.engine.rpc import convert
from services.engine.rpc.servicer import Context, Servicer, page_size_of, required_text
from services.engine.starts import start_within_quotas

DEFAULT_WAIT_SECONDS = 30.0


class ExecutionServicer(Servicer, es_grpc.ExecutionServiceServicer):
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
        """A start within the tenant's quotas (starts.py)."""
        return await start_within_quotas(
            self._runner,
            self._limits.usage,
            tenant=caller.tenant,
            workflow_id=required_text(request.workflow_id, "workflow_id"),
            document=convert.from_struct(request.input),
            manual=request.manual,
            request_id=request.request_id,
            priority=request.priority or ex.DEFAULT_PRIORITY,
            input_bytes=request.input.ByteSize(),
        )

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
        execution_id = required_text(request.execution_id, "execution_id")
        state = await self._runner.get(execution_id, tenant=self._tenant_of(context, execution_id))
        return es.GetExecutionResponse(execution=await self._execution(state))

    async def ListExecutions(
        self, request: es.ListExecutionsRequest, context: Context
    ) -> es.ListExecutionsResponse:
        page = await self._runner.list_executions(
            tenant=self._caller(context).tenant,
            page_size=page_size_of(request.page_size),
            page_token=request.page_token,
            only=convert.execution_filter(request),
        )
        now = utc_now()
        return es.ListExecutionsResponse(
            executions=[convert.execution(s, {}, now, summary=True) for s in page.items],
            next_page_token=page.next_page_token,
        )

    async def ListExecutionSteps(
        self, request: es.ListExecutionStepsRequest, context: Context
    ) -> es.ListExecutionStepsResponse:
        execution_id = required_text(request.execution_id, "execution_id")
        state = await self._runner.get(execution_id, tenant=self._tenant_of(context, execution_id))
        return es.ListExecutionStepsResponse(steps=convert.execution_steps(state))

    async def WatchExecution(
        self, request: es.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[es.WatchExecutionResponse]:
        after = request.after_seq if request.HasField("after_seq") else None
        execution_id = required_text(request.execution_id, "execution_id")
        tenant = self._tenant_of(context, execution_id)
        last = after
        try:
            # A stream lives no longer than the token it was opened with.
            async with asyncio.timeout(self._caller(context).seconds_left()):
                async for item in self._runner.watch(execution_id, after, tenant=tenant):
                    if isinstance(item, ev.Event):
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
        execution_id = required_text(request.execution_id, "execution_id")
        state = await self._runner.cancel(
            execution_id, request.reason, tenant=self._caller(context).tenant
        )
        return es.CancelExecutionResponse(execution=await self._execution(state))

    async def AdvanceExecution(
        self, request: es.AdvanceExecutionRequest, context: Context
    ) -> es.AdvanceExecutionResponse:
        state = await self._runner.advance(
            required_text(request.execution_id, "execution_id"),
            convert.from_struct(request.data),
            tenant=self._caller(context).tenant,
        )
        return es.AdvanceExecutionResponse(execution=await self._execution(state))

    async def RetryExecution(
        self, request: es.RetryExecutionRequest, context: Context
    ) -> es.RetryExecutionResponse:
        """A retried execution runs again: it counts against its tenant's running executions
        as a start does (a retry already made, asked again by its request id, needs no room)."""
        caller = self._caller(context)
        execution_id = required_text(request.execution_id, "execution_id")
        usage = self._limits.usage
        try:
            reserved = await usage.admit_start(caller.tenant, 0)
        except QuotaExceeded:
            made = await self._runner.get(execution_id, tenant=caller.tenant)
            if not request.request_id or request.request_id not in made.retry_request_ids:
                raise
            reserved = None
        try:
            state = await self._runner.retry(
                execution_id, request.from_step, request.request_id, tenant=caller.tenant
            )
        except BaseException:
            if reserved is not None:
                usage.dropped(reserved)
            raise
        if reserved is not None:
            usage.stored(reserved)  # no bytes: it counts as running until the database has it
        return es.RetryExecutionResponse(execution=await self._execution(state))
