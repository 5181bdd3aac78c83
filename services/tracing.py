"""Traces (OpenTelemetry): one trace per execution start, across gateway, engine and pioneer.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. Then
`configure(service)`, called by each service's __main__, installs that service's tracer
provider (resource `service.name` discovery-engine, discovery-pioneer or discovery-gateway),
which exports in batches with OTLP over gRPC; the standard OTEL_* variables set the rest
(headers, certificates, sampler, batch sizes, resource attributes). While tracing is off
nothing is installed: no interceptor on any channel or server, no middleware, no span; what is
left is a dictionary lookup where an attempt is handed out or ends.

The context travels as W3C `traceparent`: in gRPC metadata (the official interceptors, on the
engine's and pioneer's servers and on every channel to an engine), in HTTP headers (the
official aiohttp middleware in the gateway, the aiohttp client of the engine's webhook pushes)
and with the execution itself. The engine keeps its start's span context in the execution's
document; each attempt of a step is a span of its own under it ("step <name>"), whose id is
derived from (execution, step order, attempt) so that every engine, whenever, names it alike:
the runner that takes the attempt is handed it (`StepTask.traceparent`), and the engine that
logs the attempt's end records the span, from when the attempt was queued to when it ended.

Tests install providers of their own (`install`, with an in-memory exporter).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc import filters as grpc_filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:  # aiohttp is the gateway's and the engine's, never pioneer's
    import aiohttp
    from aiohttp.typedefs import Middleware

# Either turns tracing on (the second names the traces' endpoint alone).
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICES = ("engine", "pioneer", "gateway")
# Instrumentation scope of the spans this project makes itself.
SCOPE = "discovery"

# gRPC calls that get no server span: health checks and reflection, and the step queue's
# long polls and takes (waits, not work: the attempt's span says when it was taken).
_UNTRACED_SERVER_CALLS = grpc_filters.negate(
    grpc_filters.any_of(
        grpc_filters.service_prefix("grpc.health."),
        grpc_filters.service_prefix("grpc.reflection."),
        grpc_filters.method_name("PollStepAttempts"),
        grpc_filters.method_name("TakeStepAttempt"),
    )
)

_W3C = TraceContextTextMapPropagator()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_providers: dict[str, TracerProvider] = {}
# The span id the next span gets, when set (`_AttemptIds`).
_next_span_id: ContextVar[int | None] = ContextVar("next_span_id", default=None)


class _AttemptIds(RandomIdGenerator):
    """Random ids, except for the span being started while `_next_span_id` is set: an
    attempt's span, whose id every engine derives alike (`attempt_span_id`)."""

    def generate_span_id(self) -> int:
        chosen = _next_span_id.get()
        return chosen if chosen is not None else super().generate_span_id()


def new_provider(service: str, *processors: SpanProcessor) -> TracerProvider:
    """A tracer provider for `service` (engine, pioneer or gateway): its resource, the
    attempt span ids, and `processors`."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: f"discovery-{service}"}),
        id_generator=_AttemptIds(),
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def configure(service: str) -> bool:
    """Turns tracing on for `service` when an OTLP endpoint is set; whether it did. Call it
    before the service builds its servers and channels (they are instrumented then)."""
    if not any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES):
        return False
    # Imported only when tracing is on: the exporter brings its own protobuf modules.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = new_provider(service, BatchSpanProcessor(OTLPSpanExporter()))
    install(service, provider)
    # For any library that asks the global one; the provider flushes at exit by itself.
    trace.set_tracer_provider(provider)
    return True


def install(service: str, provider: TracerProvider) -> None:
    """Traces `service` with `provider` (made by `new_provider`) from now on: what it builds
    afterwards is instrumented."""
    if not isinstance(provider.id_generator, _AttemptIds):
        raise ValueError("the provider must come from tracing.new_provider (attempt span ids)")
    _providers[service] = provider


def uninstall(service: str) -> None:
    """Tracing off for what `service` builds from now on (tests)."""
    _providers.pop(service, None)


def provider(service: str) -> TracerProvider | None:
    return _providers.get(service)


def tracer(service: str) -> trace.Tracer | None:
    installed = _providers.get(service)
    return installed.get_tracer(SCOPE) if installed is not None else None


# --- instrumentation, none of it while tracing is off ----------------------------------------


def grpc_server_interceptors(service: str) -> list[grpc.aio.ServerInterceptor]:
    """The server span of each call, child of the caller's `traceparent` (first in the
    list: it also times the other interceptors, and sees the status they answer)."""
    installed = _providers.get(service)
    if installed is None:
        return []
    # The instrumentation's factories carry no annotations; what they return is typed here.
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=installed, filter_=_UNTRACED_SERVER_CALLS
    )
    return [interceptor]


def grpc_client_interceptors(service: str) -> list[grpc.aio.ClientInterceptor]:
    """A client span for each call made inside a trace, whose context goes in the call's
    metadata. A call made outside any trace (a runner's poll, a background follower) starts
    none: the services begin traces where requests come in, not on their own."""
    installed = _providers.get(service)
    if installed is None:
        return []
    # Unannotated, as above.
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(  # type: ignore[no-untyped-call]
        tracer_provider=installed, filter_=_in_a_trace
    )
    return interceptors


def _in_a_trace(details: object) -> bool:
    return trace.get_current_span().get_span_context().is_valid


_aiohttp_server_ready = False


def aiohttp_middlewares(service: str) -> list[Middleware]:
    """The gateway's server span of each request, child of the request's `traceparent`."""
    installed = _providers.get(service)
    if installed is None:
        return []
    from opentelemetry.instrumentation import aiohttp_server

    global _aiohttp_server_ready
    if not _aiohttp_server_ready:
        # The middleware reads what only its instrumentor sets up (excluded URLs from
        # OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS, semantic conventions, its meters). The
        # instrumentor also swaps aiohttp's Application class for a subclass of it, for the
        # whole process (aiohttp warns that subclassing is deprecated): undone at once, as the
        # middleware goes on the gateway's application only.
        instrumentor = aiohttp_server.AioHttpServerInstrumentor()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            instrumentor.instrument(skip_dep_check=True)
        instrumentor.uninstrument()
        _aiohttp_server_ready = True
    middleware: Middleware = aiohttp_server.create_aiohttp_middleware(tracer_provider=installed)
    return [middleware]


def aiohttp_trace_configs(service: str) -> list[aiohttp.TraceConfig]:
    """For an aiohttp ClientSession: a client span per request, its context in the request's
    `traceparent` header."""
    installed = _providers.get(service)
    if installed is None:
        return []
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    return [create_trace_config(tracer_provider=installed)]


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Calls made inside make no span and carry no context (a runner's handler list, read
    every few seconds, is nobody's trace)."""
    from opentelemetry.instrumentation.utils import suppress_http_instrumentation

    with suppress_http_instrumentation():
        yield


# --- traceparent ------------------------------------------------------------------------------


def current_traceparent() -> str | None:
    """The current span's context as a W3C traceparent; None outside any trace."""
    return _traceparent(trace.get_current_span().get_span_context())


def _traceparent(context: trace.SpanContext, span_id: int | None = None) -> str | None:
    """`context` as a W3C traceparent, naming `span_id` instead of its own when given."""
    if not context.is_valid:
        return None
    span = context.span_id if span_id is None else span_id
    return f"00-{context.trace_id:032x}-{span:016x}-{int(context.trace_flags):02x}"


def span_context(traceparent: str | None) -> trace.SpanContext | None:
    """The (remote) span context a traceparent names; None for none or a malformed one."""
    if not traceparent:
        return None
    extracted = _W3C.extract({"traceparent": traceparent})
    context = trace.get_current_span(extracted).get_span_context()
    return context if context.is_valid else None


def trace_id(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a traceparent, as log lines carry it. Cheap (it is
    asked at every change of a traced execution): a slice of one this module wrote."""
    if traceparent is None or len(traceparent) != 55 or traceparent[2] != "-":
        return None
    return traceparent[3:35]


@contextlib.contextmanager
def attached(traceparent: str | None) -> Iterator[None]:
    """Makes the span `traceparent` names the current one inside (nothing when None): what
    is started or called there continues its trace."""
    context = span_context(traceparent)
    if context is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(context)))
    try:
        yield
    finally:
        otel_context.detach(token)


# --- step attempts ----------------------------------------------------------------------------


def attempt_span_id(execution_id: str, order: int, attempt: int) -> int:
    """The span id of attempt `attempt` of the step at `order` (both 1-based)."""
    digest = hashlib.blake2b(f"{execution_id}/{order}/{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1  # 0 is the invalid span id


def attempt_traceparent(start: str | None, execution_id: str, order: int, attempt: int) -> str:
    """What the runner of an attempt is handed: its span, in the trace of the execution's
    start `start` (a traceparent); empty when the start was not traced."""
    context = span_context(start)
    if context is None:
        return ""
    return _traceparent(context, attempt_span_id(execution_id, order, attempt)) or ""


def record_attempt(
    service: str,
    start: str | None,
    *,
    execution_id: str,
    step: str,
    order: int,
    attempt: int,
    outcome: str,
    queued_at: datetime,
    started_at: datetime | None,
    finished_at: datetime,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Records the span of an attempt that ended: "step <name>", child of the execution's
    start `start`, from `queued_at` to `finished_at`, with an event when a runner took it
    (`started_at`). Nothing when `service` does not trace or the start was not traced."""
    installed = tracer(service)
    parent = span_context(start)
    if installed is None or parent is None:
        return
    token = _next_span_id.set(attempt_span_id(execution_id, order, attempt))
    try:
        span = installed.start_span(
            f"step {step}",
            context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
            kind=SpanKind.INTERNAL,
            attributes={
                "discovery.execution_id": execution_id,
                "discovery.step": step,
                "discovery.attempt": attempt,
                "discovery.outcome": outcome,
                **(attributes or {}),
            },
            start_time=_nanoseconds(queued_at),
        )
    finally:
        _next_span_id.reset(token)
    if started_at is not None:
        span.add_event("taken by a runner", timestamp=_nanoseconds(started_at))
    if outcome != "success":
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end(end_time=_nanoseconds(finished_at))


@contextlib.contextmanager
def attempt_run(
    service: str, traceparent: str | None, name: str, attributes: Mapping[str, Any]
) -> Iterator[trace.Span]:
    """A span around a runner's run of an attempt, child of the attempt's span (the
    `traceparent` it was handed), current inside: the reports made there carry it. A
    non-recording span when `service` does not trace."""
    installed = tracer(service)
    if installed is None:
        yield trace.INVALID_SPAN
        return
    parent = span_context(traceparent)
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
    with installed.start_as_current_span(
        name, context=context, kind=SpanKind.INTERNAL, attributes=dict(attributes)
    ) as span:
        yield span


def mark_outcome(outcome: str) -> None:
    """Sets how the attempt run in the current span ended (success, failed, or why pioneer
    stopped it); anything but success is an error."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("discovery.outcome", outcome)
        if outcome != "success":
            span.set_status(Status(StatusCode.ERROR, outcome))


def _nanoseconds(value: datetime) -> int:
    """Exact, where a float's seconds would round off a few hundred nanoseconds."""
    since = value - _EPOCH
    return (since.days * 86_400 + since.seconds) * 10**9 + since.microseconds * 1000
