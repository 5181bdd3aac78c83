"""The gRPC client pioneer reports through: the engine's `StepReportService`.

Every call has a deadline. UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried
with capped exponential backoff and jitter until the caller's budget runs out, then
`EngineUnavailable`. The engine's refusals become typed exceptions here, at the boundary:
FAILED_PRECONDITION and NOT_FOUND are `StaleAttempt` (the token is not the step's current
attempt, or the engine does not know it), except that ReadBlob's NOT_FOUND is an unknown blob;
any other code is `ReportRejected`.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from discovery.engine.v1 import step_report_service_pb2 as report_pb2
from discovery.engine.v1 import step_report_service_pb2_grpc as report_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from discovery_client.channel import Tls, aio_channel
from services import tracing
from services.grpc_auth import Credentials
from services.pioneer.errors import EngineUnavailable, ReportRejected, StaleAttempt

T = TypeVar("T")

# An input may carry a 45 MB document in base64 and a result may echo it back.
MAX_MESSAGE_BYTES = 80 * 1024 * 1024
MESSAGE_SIZE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
# gRPC's own reconnect backoff grows to 120 s, during which every call fails at once with
# UNAVAILABLE; capped low so that a restarted engine is reached again within our retry budget.
# No min_reconnect_backoff_ms: gRPC also takes it as the connect timeout, too short for an
# engine a few hundred milliseconds away.
RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
STALE = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND})
# RESOURCE_EXHAUSTED that waiting does not mend: the execution logged all the progress it may.
FINAL_REASONS = frozenset({"EVENT_LIMIT_REACHED"})
# ReadBlob answers NOT_FOUND for an unknown blob: the attempt itself may be fine.
STALE_FOR_BLOBS = frozenset({grpc.StatusCode.FAILED_PRECONDITION})
# WriteBlob sends the data in messages of this size, as ReadBlob answers.
BLOB_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    call_timeout_seconds: float = 5.0
    initial_backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    backoff_multiplier: float = 2.0


class StepReporter:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        credentials: Credentials,
        policy: RetryPolicy | None = None,
    ) -> None:
        """`credentials`: a runner token for every report."""
        self._channel = channel
        self._stub = report_grpc.StepReportServiceStub(channel)
        self._credentials = credentials
        self._policy = policy or RetryPolicy()

    @classmethod
    def connect(
        cls,
        target: str,
        credentials: Credentials,
        policy: RetryPolicy | None = None,
        *,
        tls: Tls | None = None,
    ) -> StepReporter:
        channel = aio_channel(
            target,
            tls,
            options=MESSAGE_SIZE_OPTIONS + RECONNECT_OPTIONS,
            # Reports made in an attempt's span carry it: the engine's spans go under it.
            interceptors=tracing.grpc_client_interceptors("pioneer"),
        )
        return cls(channel, credentials, policy)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel to the engine, shared with the step poller."""
        return self._channel

    async def close(self) -> None:
        await self._channel.close()

    async def report_progress(
        self, request: report_pb2.ReportStepProgressRequest, *, budget_seconds: float
    ) -> bool:
        """Sends progress (or a heartbeat, with `progress` unset); True when the engine has
        cancelled the attempt."""

        async def call(call_timeout: float) -> bool:
            reply = await self._stub.ReportStepProgress(
                request, timeout=call_timeout, metadata=self._credentials.metadata()
            )
            return bool(reply.cancel_requested)

        return await self._retrying("ReportStepProgress", call, budget_seconds)

    async def complete_step(
        self,
        request: report_pb2.CompleteStepRequest,
        *,
        budget_seconds: float,
        retry_every: float | None = None,
    ) -> None:
        async def call(call_timeout: float) -> None:
            await self._stub.CompleteStep(
                request, timeout=call_timeout, metadata=self._credentials.metadata()
            )

        await self._retrying("CompleteStep", call, budget_seconds, max_backoff=retry_every)

    async def read_blob(
        self, request: report_pb2.ReadBlobRequest, *, budget_seconds: float
    ) -> bytes:
        async def call(call_timeout: float) -> bytes:
            # A stream is restarted from its start on retry: chunks carry no offsets.
            replies = self._stub.ReadBlob(
                request, timeout=call_timeout, metadata=self._credentials.metadata()
            )
            chunks = [reply.chunk async for reply in replies]
            return b"".join(chunks)

        # A large blob takes longer than one short call: the whole budget is the deadline.
        return await self._retrying(
            "ReadBlob", call, budget_seconds, whole_budget=True, stale=STALE_FOR_BLOBS
        )

    async def write_blob(
        self,
        header: report_pb2.WriteBlobHeader,
        data: bytes,
        *,
        budget_seconds: float,
    ) -> report_pb2.WriteBlobResponse:
        """Streams `data` after `header`; the engine's reference to the stored blob."""

        async def parts() -> AsyncIterator[report_pb2.WriteBlobRequest]:
            yield report_pb2.WriteBlobRequest(header=header)
            view = memoryview(data)
            for offset in range(0, len(data), BLOB_CHUNK_BYTES):
                yield report_pb2.WriteBlobRequest(
                    chunk=bytes(view[offset : offset + BLOB_CHUNK_BYTES])
                )

        async def call(call_timeout: float) -> report_pb2.WriteBlobResponse:
            # A retry sends the whole blob again from a fresh stream: the engine stores a blob
            # only once its stream has ended, so a broken one leaves nothing behind.
            reply: report_pb2.WriteBlobResponse = await self._stub.WriteBlob(
                parts(), timeout=call_timeout, metadata=self._credentials.metadata()
            )
            return reply

        return await self._retrying("WriteBlob", call, budget_seconds, whole_budget=True)

    async def _retrying(
        self,
        what: str,
        call: Callable[[float], Awaitable[T]],
        budget_seconds: float,
        *,
        whole_budget: bool = False,
        stale: frozenset[grpc.StatusCode] = STALE,
        max_backoff: float | None = None,
    ) -> T:
        """`max_backoff` caps the wait between tries below the policy's."""
        longest = min(self._policy.max_backoff_seconds, max_backoff or math.inf)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_seconds
        backoff = self._policy.initial_backoff_seconds
        while True:
            remaining = max(deadline - loop.time(), 0.001)
            timeout = (
                remaining if whole_budget else min(self._policy.call_timeout_seconds, remaining)
            )
            try:
                return await call(timeout)
            except grpc.aio.AioRpcError as err:
                code = err.code()
                detail = f"{what}: {code.name} {err.details() or ''}".rstrip()
                if code in stale:
                    raise StaleAttempt(detail) from None
                if code not in RETRYABLE or _reason(err) in FINAL_REASONS:
                    raise ReportRejected(detail) from None
                # Jitter keeps many steps that lost the engine together from returning in step.
                delay = random.uniform(backoff / 2, backoff)
                if loop.time() + delay >= deadline:
                    raise EngineUnavailable(
                        f"{detail}; gave up after {budget_seconds:g} s of retries"
                    ) from None
                await asyncio.sleep(delay)
                backoff = min(backoff * self._policy.backoff_multiplier, longest)


def _reason(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason the engine put in the status details, if any."""
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""
