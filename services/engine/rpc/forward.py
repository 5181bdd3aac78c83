"""A call for an execution that another engine holds goes to that engine, as it came.

Any engine answers any call: a report, cancel or advance that reaches an engine which does
not hold the execution (the runner raises HeldElsewhere, after the tenant check) is sent on to
the engine that does, with the caller's own credentials, which that engine verifies itself;
its answer, or its error with all its details, is the caller's. A forwarded call carries how
many times it was forwarded: an execution that moves again meanwhile is looked for at most
MAX_HOPS times, then the caller is told to retry (UNAVAILABLE), never where it is held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_interceptor.server import AsyncServerInterceptor

from discovery_client.channel import Tls, aio_channel
from services import tracing
from services.engine.dispatch import Assignment
from services.engine.domain.errors import HeldElsewhere, Unavailable
from services.engine.rpc import convert
from services.engine.step_queue import ReadyAttempt
from services.grpc_auth import Credentials

log = logging.getLogger(__name__)

HOPS_HEADER = "discovery-forwarded-hops"
MAX_HOPS = 2
# Of the caller's metadata, what the engine it is forwarded to needs: its credentials, and
# what ties the call to the caller's logs and traces.
FORWARDED_HEADERS = ("authorization", "traceparent", "tracestate")
# A forwarded call waits no longer than this for an engine that does not answer (a caller
# without a deadline would otherwise wait on a paused engine for ever).
MAX_FORWARD_SECONDS = 60.0
# A take from another engine answers at once, or the runner's poll goes on without it.
TAKE_SECONDS = 5.0
# Set on every status that carries google.rpc details: an engine's own refusal, as opposed to
# a failure to reach it.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class Forwarder:
    """One channel per engine address, opened at the first call forwarded there; and the
    calls an engine makes to another in its own name (`take`)."""

    def __init__(
        self, tls: Tls | None, max_message_bytes: int, credentials: Credentials | None = None
    ) -> None:
        self._tls = tls
        self._credentials = credentials
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}
        # Told the execution whose holder did not answer a forwarded call (the runner then
        # looks for it in the database again instead of where it last saw it).
        self.on_unreachable: Callable[[str], None] = lambda execution_id: None

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = aio_channel(
                address,
                self._tls,
                options=self._options,
                # A forwarded call's span: the other engine's spans go under it.
                interceptors=tracing.grpc_client_interceptors("engine"),
            )
            self._channels[address] = channel
        return channel

    async def take(self, address: str, item: ReadyAttempt, runner_id: str) -> Assignment | None:
        """Takes, for a runner that polled this engine, a queued attempt of an execution the
        engine at `address` holds; None when it left the queue, or that engine does not
        answer (the attempt stays queued there, for its own runners and for the next
        reconciliation of this engine's queue)."""
        assert self._credentials is not None, "an engine's own calls need its credentials"
        stub = sq_grpc.StepQueueServiceStub(self.channel(address))
        request = sq.TakeStepAttemptRequest(
            execution_id=item.execution_id, attempt_token=item.token, runner_id=runner_id
        )
        try:
            reply = await stub.TakeStepAttempt(
                request,
                metadata=self._credentials.metadata(),
                timeout=TAKE_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "attempt not taken from another engine",
                extra={"to": address, "code": exc.code().name, "execution_id": item.execution_id},
            )
            return None
        return convert.assignment(reply.task) if reply.HasField("task") else None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class ForwardInterceptor(AsyncServerInterceptor):
    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        try:
            response = method(request_or_iterator, context)
            if hasattr(response, "__aiter__"):
                return response  # streams (watches, blobs) are served by any engine
            return await response
        except HeldElsewhere as held:
            return await self._forward(held, request_or_iterator, context, method_name)

    async def _forward(
        self,
        held: HeldElsewhere,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        incoming = context.invocation_metadata() or ()
        hops = next((int(v) for k, v in incoming if k == HOPS_HEADER and str(v).isdigit()), 0)
        if hops >= MAX_HOPS:
            raise Unavailable(
                f"{held.metadata['execution_id']} is moving between engines; retry",
                metadata=held.metadata,
            )
        metadata = [(k, v) for k, v in incoming if k in FORWARDED_HEADERS]
        metadata.append((HOPS_HEADER, str(hops + 1)))
        left = context.time_remaining()
        call = self._forwarder.channel(held.address).unary_unary(
            method_name,
            request_serializer=type(request).SerializeToString,
            response_deserializer=_response_class(method_name).FromString,
        )
        try:
            return await call(
                request,
                metadata=metadata,
                timeout=MAX_FORWARD_SECONDS if left is None else min(left, MAX_FORWARD_SECONDS),
            )
        except grpc.aio.AioRpcError as exc:
            trailing = tuple(exc.trailing_metadata() or ())
            if any(k == STATUS_DETAILS_KEY for k, _ in trailing):
                # The engine's own answer, with its details: the caller's, as it is.
                await context.abort(exc.code(), exc.details() or "", trailing)
            log.warning(
                "forwarded call failed",
                extra={"method": method_name, "to": held.address, "code": exc.code().name},
            )
            self._forwarder.on_unreachable(held.execution_id)
            raise Unavailable(
                f"the engine holding {held.metadata['execution_id']} does not answer; retry",
                metadata=held.metadata,
            ) from None


def _response_class(method_name: str) -> Any:
    """The response message class of `/package.Service/Method`."""
    service, method = method_name.lstrip("/").rsplit("/", 1)
    descriptor = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)
    return message_factory.GetMessageClass(descriptor.output_type)
