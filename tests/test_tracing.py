"""Traces: a run started through the gateway's REST API is one trace, one tree of spans, across
the gateway, the engine and pioneer: the gateway's request, the engine's start under it, a
span per step attempt under the start, pioneer's run of each attempt under it, and the
engine's handling of pioneer's reports under that.

The three services run in this process, each with a tracer provider of its own (its own
resource `service.name`), all exporting to one in-memory exporter. `python -m
tests.test_tracing` runs the same and prints the tree.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import step_report_service_pb2_grpc as sr_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services import jsonlog, tracing
from services.auth import RUNNER
from services.engine.app import Engine
from services.engine.store.embedded import DatabaseProcess
from tests.gateway.harness import Api, start_gateway
from tests.stack import (
    ROOT,
    Client,
    Pioneer,
    authenticated,
    engine_settings,
    free_port,
    start_stack,
    token,
    wait_for_runner,
)

ENGINE, PIONEER, GATEWAY = "discovery-engine", "discovery-pioneer", "discovery-gateway"
STEPS: list[dict[str, Any]] = [
    {"name": "wait", "handler": "sleep", "heartbeat_timeout_seconds": 5},
    # Fails every time: two attempts, so two spans of one step.
    {
        "name": "broken",
        "handler": "fail",
        "retry": {"max_attempts": 2, "initial_backoff_seconds": 0.05},
    },
]
ATTEMPTS = [("wait", 1), ("broken", 1), ("broken", 2)]


@dataclass
class TracedRun:
    execution_id: str
    # Every span of the run's trace.
    spans: list[ReadableSpan]
    # Every line the three services logged meanwhile (at debug), as JSON.
    lines: list[dict[str, Any]]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(jsonlog.JsonFormatter("test"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def traced_run(mongo_uri: str, database: str) -> TracedRun:
    """Engine, pioneer and gateway in this process, each traced into one in-memory exporter;
    a workflow run started with `POST /execute-async/` until its trace is whole."""
    exporter = InMemorySpanExporter()
    for service in tracing.SERVICES:
        tracing.install(service, tracing.new_provider(service, SimpleSpanProcessor(exporter)))
    captured, root = _Lines(), logging.getLogger()
    # The services' own lines at debug (the database driver's are not wanted), and the
    # gateway's access log.
    loggers = {name: logging.getLogger(name) for name in ("services", "aiohttp.access")}
    levels = {name: logger.level for name, logger in loggers.items()}
    root.addHandler(captured)
    for logger in loggers.values():
        logger.setLevel(logging.DEBUG)
    try:
        engine = Engine(engine_settings(mongo_uri, database, free_port()))
        await engine.start()
        pioneer = Pioneer(engine.port)
        client = Client(f"127.0.0.1:{engine.port}")
        try:
            await pioneer.start()
            gateway = await start_gateway(engine.port)
            try:
                await wait_for_runner(client.queue, pioneer.name)
                headers = {"Authorization": f"Bearer {token()}"}
                async with aiohttp.ClientSession(headers=headers) as session:
                    api = Api(session, gateway.url)
                    workflow_id = await api.workflow(*STEPS, name=f"traced-{uuid.uuid4().hex[:6]}")
                    execution_id = await api.start(workflow_id, {"seconds": 0.3})
                    ended = await api.wait_terminal(execution_id)
                    assert ended["status"] == "failed", ended
                spans = await _whole_trace(exporter, execution_id)
                return TracedRun(execution_id, spans, captured.lines)
            finally:
                await gateway.stop()
        finally:
            await client.close()
            await engine.stop(grace=0)
            await pioneer.stop()
    finally:
        root.removeHandler(captured)
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        for service in tracing.SERVICES:
            tracing.uninstall(service)


async def _whole_trace(
    exporter: InMemorySpanExporter, execution_id: str, seconds: float = 15
) -> list[ReadableSpan]:
    """The spans of the run's trace once its steps' spans and pioneer's runs have ended and
    every parent has been exported (a span is exported when it ends)."""
    deadline = time.monotonic() + seconds
    while True:
        spans = exporter.get_finished_spans()
        steps = [s for s in spans if _attribute(s, "discovery.execution_id") == execution_id]
        trace_ids = {_trace_id(s) for s in steps}
        assert len(trace_ids) <= 1, f"the run's spans are in {len(trace_ids)} traces"
        if trace_ids:
            run = [s for s in spans if _trace_id(s) in trace_ids]
            ids = {_span_id(s) for s in run}
            named = Counter(s.name.split(" ")[0] for s in steps)
            if (
                named["step"] == len(ATTEMPTS)
                and named["run"] == len(ATTEMPTS)
                and all(s.parent is None or s.parent.span_id in ids for s in run)
            ):
                return run
        if time.monotonic() > deadline:
            raise AssertionError("the run's trace is not whole:\n" + span_tree(list(spans)))
        await asyncio.sleep(0.05)


def span_tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an indented tree, each with its service (one line a span, children by
    start time); a span whose parent is not among them is a root."""
    by_id = {_span_id(s): s for s in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in by_id else None, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
            service = str(span.resource.attributes.get("service.name", "?"))
            detail = ", ".join(
                f"{key.removeprefix('discovery.')}={_attribute(span, key)}"
                for key in ("discovery.attempt", "discovery.outcome")
                if _attribute(span, key) is not None
            )
            lines.append(
                f"{'  ' * depth}{span.name}  [{service.removeprefix('discovery-')}"
                f" {span.kind.name.lower()}{', ' + detail if detail else ''}]"
            )
            walk(_span_id(span), depth + 1)

    walk(None, 0)
    return "\n".join(lines)


@pytest.fixture(scope="module")
async def run(mongo_server: str) -> TracedRun:
    """One traced run for the module's tests (the stack takes a few seconds)."""
    return await traced_run(mongo_server, f"t{uuid.uuid4().hex[:12]}")


async def test_one_run_is_one_tree_across_the_three_services(run: TracedRun) -> None:
    print(span_tree(run.spans))
    spans = run.spans
    by_id = {_span_id(s): s for s in spans}

    # One tree: a single root, the gateway's request, and every other parent present.
    roots = [s for s in spans if s.parent is None]
    assert [(r.name, _service(r), r.kind) for r in roots] == [
        ("POST /execute-async/", GATEWAY, SpanKind.SERVER)
    ]
    assert all(s.parent is None or s.parent.span_id in by_id for s in spans)
    assert {_service(s) for s in spans} == {GATEWAY, ENGINE, PIONEER}

    # One span per attempt, under the engine's handling of the start, itself under the
    # gateway's call of it.
    steps = [s for s in spans if s.name.startswith("step ")]
    attempts = [
        (_attribute(s, "discovery.step"), _attribute(s, "discovery.attempt")) for s in steps
    ]
    assert sorted(attempts) == sorted(ATTEMPTS)
    assert {s.name for s in steps} == {"step wait", "step broken"}
    assert [_attribute(s, "discovery.outcome") for s in sorted(steps, key=_start)] == [
        "success",
        "failed",
        "failed",
    ]
    starts = {_parent(s, by_id) for s in steps}
    assert len(starts) == 1
    start = by_id[starts.pop()]
    assert (start.name, _service(start), start.kind) == (
        "/discovery.engine.v1.ExecutionService/StartExecution",
        ENGINE,
        SpanKind.SERVER,
    )
    gateway_call = by_id[_parent(start, by_id)]
    assert (gateway_call.name, _service(gateway_call), gateway_call.kind) == (
        start.name,
        GATEWAY,
        SpanKind.CLIENT,
    )
    assert _parent(gateway_call, by_id) == _span_id(roots[0])

    for step in steps:
        # Pioneer's run of the attempt, under the attempt's span; it starts once the
        # attempt was taken, after the attempt's span began (its time in the queue).
        runs = [s for s in spans if s.parent is not None and s.parent.span_id == _span_id(step)]
        assert [(r.name, _service(r)) for r in runs] == [(f"run {step.name[5:]}", PIONEER)]
        assert _start(runs[0]) >= _start(step)
        assert _attribute(runs[0], "discovery.attempt") == _attribute(step, "discovery.attempt")
        # Its reports, and the engine's handling of each under them.
        calls = [s for s in spans if s.parent is not None and s.parent.span_id == _span_id(runs[0])]
        assert calls and {(_service(c), c.kind) for c in calls} == {(PIONEER, SpanKind.CLIENT)}
        handled = [
            s
            for s in spans
            if s.parent is not None and s.parent.span_id in {_span_id(c) for c in calls}
        ]
        assert sorted(h.name for h in handled) == sorted(c.name for c in calls)
        assert {(_service(h), h.kind) for h in handled} == {(ENGINE, SpanKind.SERVER)}
        assert "/discovery.engine.v1.StepReportService/CompleteStep" in {h.name for h in handled}
    progress = "/discovery.engine.v1.StepReportService/ReportStepProgress"
    assert any(s.name == progress and _service(s) == ENGINE for s in spans)


async def test_every_line_about_the_run_names_it_and_its_trace(run: TracedRun) -> None:
    execution_id, trace_id = run.execution_id, f"{_trace_id(run.spans[0]):032x}"
    # Whatever names the run, in its text or its fields, says so in `execution_id`.
    about = [line for line in run.lines if execution_id in json.dumps(line)]
    assert all(line.get("execution_id") == execution_id for line in about), about
    services = {
        line["logger"].split(".")[1] for line in about if line["logger"] != "aiohttp.access"
    }
    assert services == {"engine", "pioneer"}
    assert any(line["logger"] == "aiohttp.access" for line in about)  # the gateway's
    # The engine's and pioneer's lines about the run are in its trace (the gateway's
    # requests for its status are traces of their own).
    worked = [line for line in about if line["logger"] != "aiohttp.access"]
    assert all(line.get("trace_id") == trace_id for line in worked), worked


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get("service.name"))


def _attribute(span: ReadableSpan, key: str) -> Any:
    return span.attributes.get(key) if span.attributes is not None else None


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


def _trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    trace_id: int = span.context.trace_id
    return trace_id


def _parent(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> int:
    assert span.parent is not None and span.parent.span_id in by_id, span.name
    return span.parent.span_id


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


async def _print_a_run() -> None:
    with tempfile.TemporaryDirectory(prefix="discovery-trace-") as directory:
        database = DatabaseProcess(Path(directory))
        uri = await database.start_async()
        try:
            run = await traced_run(uri, "traced")
        finally:
            database.stop()
    print(f"execution {run.execution_id}, trace {_trace_id(run.spans[0]):032x}:")
    print(span_tree(run.spans))


if __name__ == "__main__":
    asyncio.run(_print_a_run())


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Engine and pioneer traced into one in-memory exporter, for what the test builds."""
    spans = InMemorySpanExporter()
    for service in ("engine", "pioneer"):
        tracing.install(service, tracing.new_provider(service, SimpleSpanProcessor(spans)))
    try:
        yield spans
    finally:
        for service in ("engine", "pioneer"):
            tracing.uninstall(service)


async def _finished(
    exporter: InMemorySpanExporter, name: str, seconds: float = 15
) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The first span named `name` once it has ended, and every span ended by then."""
    deadline = time.monotonic() + seconds
    while True:
        spans = list(exporter.get_finished_spans())
        found = [s for s in spans if s.name == name]
        if found:
            return found[0], spans
        if time.monotonic() > deadline:
            raise AssertionError(f"no span {name!r}:\n{span_tree(spans)}")
        await asyncio.sleep(0.05)


async def test_an_attempt_that_outlives_its_engine_stays_in_the_trace_of_its_start(
    mongo_server: str, database: str, exporter: InMemorySpanExporter
) -> None:
    """The start's span is kept with the execution: the engine that takes the execution back
    after a restart records the attempt's span under it, with the id its runner was handed."""
    settings = engine_settings(mongo_server, database, free_port())
    engine = Engine(settings)
    await engine.start()
    pioneer = Pioneer(settings.port)
    client = Client(f"127.0.0.1:{settings.port}")
    try:
        await pioneer.start()
        await wait_for_runner(client.queue, pioneer.name)
        workflow = await client.create_workflow(
            f"restarted-{uuid.uuid4().hex[:6]}",
            {"name": "wait", "handler": "sleep", "heartbeat_timeout_seconds": 10},
        )
        execution = await client.start(workflow.workflow_id, {"seconds": 1.5})
        assert pioneer.runner is not None
        async with asyncio.timeout(10):
            while pioneer.runner.running_count == 0:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.02)
        await engine.stop(grace=0)
        engine = Engine(settings)  # the same engine id: it takes its executions back at once
        await engine.start()
        ended = await client.wait_terminal(execution.execution_id)
        assert ended.status == ex_pb.EXECUTION_STATUS_COMPLETED
        step, spans = await _finished(exporter, "step wait")
        run, spans = await _finished(exporter, "run wait")
    finally:
        await client.close()
        await engine.stop(grace=0)
        await pioneer.stop()
    start = next(s for s in spans if s.name.endswith("/StartExecution"))
    assert step.parent is not None and step.parent.span_id == _span_id(start)
    assert _trace_id(step) == _trace_id(start) == _trace_id(run)
    assert _span_id(step) == tracing.attempt_span_id(execution.execution_id, 1, 1)
    assert run.parent is not None and run.parent.span_id == _span_id(step)
    assert [e.name for e in step.events] == ["taken by a runner"]


@dataclass
class _HttpRunner:
    """An HTTP step runner that keeps the headers of every attempt pushed to it."""

    posts: asyncio.Queue[tuple[dict[str, Any], dict[str, str]]]
    reads: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/handlers", self._handlers)
        app.router.add_post("/v1/attempts", self._attempts)
        return app

    async def _handlers(self, request: web.Request) -> web.Response:
        self.reads += 1
        return web.json_response({"handlers": ["hook"], "max_concurrent": 4})

    async def _attempts(self, request: web.Request) -> web.Response:
        self.posts.put_nowait((await request.json(), dict(request.headers)))
        return web.json_response({"accepted": True}, status=202)


async def test_an_attempt_pushed_to_an_http_runner_carries_its_span(
    mongo_server: str, database: str, exporter: InMemorySpanExporter
) -> None:
    hook = _HttpRunner(asyncio.Queue())
    site = web.AppRunner(hook.app())
    await site.setup()
    port = free_port()
    await web.TCPSite(site, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    stack = await start_stack(mongo_server, database, webhook_urls=(url,))
    try:
        await wait_for_runner(stack.client.queue, f"webhook:{url}")
        workflow = await stack.client.create_workflow(
            f"pushed-{uuid.uuid4().hex[:6]}", {"name": "remote", "handler": "hook"}
        )
        execution = await stack.client.start(workflow.workflow_id)
        attempt, headers = await asyncio.wait_for(hook.posts.get(), 15)
        await stack.client.reports.CompleteStep(
            sr.CompleteStepRequest(
                execution_id=attempt["execution_id"],
                step_name=attempt["step_name"],
                attempt_token=attempt["attempt_token"],
                success=True,
            ),
            timeout=10,
        )
        step, spans = await _finished(exporter, "step remote")
    finally:
        await stack.stop()
        await site.cleanup()
    # The POST is a span under the attempt's, and the runner is handed its context.
    (post,) = [s for s in spans if s.kind == SpanKind.CLIENT and s.name == "POST"]
    assert post.parent is not None and post.parent.span_id == _span_id(step)
    assert _span_id(step) == tracing.attempt_span_id(execution.execution_id, 1, 1)
    version, trace_id, parent_id, _ = headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == (
        "00",
        f"{_trace_id(step):032x}",
        f"{_span_id(post):016x}",
    )
    # Reading the runner's handler list is no one's trace.
    assert hook.reads >= 1
    assert not [s for s in spans if s.kind == SpanKind.CLIENT and s.name == "GET"]


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace collector: keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


_EXPORT_ONE_SPAN = (
    "from services import tracing\n"
    "assert tracing.configure('gateway')\n"
    "tracer = tracing.tracer('gateway')\n"
    "assert tracer is not None\n"
    "tracer.start_span('hello').end()\n"
)


async def test_a_service_exports_with_otlp_when_an_endpoint_is_set() -> None:
    collector = _Collector()
    server = grpc.aio.server()
    # Generated gRPC code, without annotations.
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _EXPORT_ONE_SPAN,
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            },
        )
        # The provider flushes its batch when the process exits.
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        await server.stop(0)
    exported = [
        (resource.resource, span.name)
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert [name for _, name in exported] == ["hello"]
    attributes = {a.key: a.value.string_value for a in exported[0][0].attributes}
    assert attributes["service.name"] == GATEWAY


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not tracing.configure("engine")
    assert tracing.provider("engine") is None
    # Nothing is installed anywhere: no interceptor, no middleware, no span.
    assert tracing.grpc_server_interceptors("engine") == []
    assert tracing.grpc_client_interceptors("engine") == []
    assert tracing.aiohttp_middlewares("gateway") == []
    assert tracing.aiohttp_trace_configs("engine") == []


async def test_a_report_forwarded_to_the_engine_holding_the_execution_stays_in_its_trace(
    mongo_server: str, database: str, exporter: InMemorySpanExporter
) -> None:
    """A runner reports, with the attempt's traceparent, to an engine that does not hold the
    execution: the call it forwards, and the holder's handling of it, are under it."""
    engines: list[Engine] = []
    channels: list[grpc.aio.Channel] = []
    try:
        for _ in range(2):
            port = free_port()
            settings = replace(
                engine_settings(mongo_server, database, port),
                advertise_address=f"127.0.0.1:{port}",
            )
            engines.append(Engine(settings))
            await engines[-1].start()
            channels.append(
                grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=authenticated(RUNNER))
            )
        holder = sq_grpc.StepQueueServiceStub(channels[0])
        poll = sq.PollStepAttemptsRequest(
            runner_id="traced-runner", handlers=["remote"], max_attempts=1, wait_seconds=0.1
        )
        await holder.PollStepAttempts(poll, timeout=10)  # the handler is offered
        client = Client(f"127.0.0.1:{engines[0].port}")
        try:
            workflow = await client.create_workflow(
                f"forwarded-{uuid.uuid4().hex[:6]}", {"name": "remote", "handler": "remote"}
            )
            execution = await client.start(workflow.workflow_id)
        finally:
            await client.close()
        poll.wait_seconds = 5
        (task,) = (await holder.PollStepAttempts(poll, timeout=10)).tasks
        assert task.traceparent
        await sr_grpc.StepReportServiceStub(channels[1]).CompleteStep(
            sr.CompleteStepRequest(
                execution_id=task.execution_id,
                step_name=task.step_name,
                attempt_token=task.attempt_token,
                success=True,
            ),
            metadata=[("traceparent", task.traceparent)],
            timeout=10,
        )
        step, spans = await _finished(exporter, "step remote")
    finally:
        for channel in channels:
            await channel.close()
        for engine in engines:
            await engine.stop(grace=0)
    assert _span_id(step) == tracing.attempt_span_id(execution.execution_id, 1, 1)
    chain = [s for s in spans if s.name.endswith("/CompleteStep")]
    by_kind = {s.kind: s for s in chain}
    # Received by the other engine (a server span under the attempt's), forwarded (a client
    # span), handled by the holder (a server span under that).
    assert sorted(s.kind.name for s in chain) == ["CLIENT", "SERVER", "SERVER"]
    received, handled = sorted(
        (s for s in chain if s.kind == SpanKind.SERVER), key=lambda s: _start(s)
    )
    assert received.parent is not None and received.parent.span_id == _span_id(step)
    forwarded = by_kind[SpanKind.CLIENT]
    assert forwarded.parent is not None and forwarded.parent.span_id == _span_id(received)
    assert handled.parent is not None and handled.parent.span_id == _span_id(forwarded)
    assert {_trace_id(s) for s in chain} == {_trace_id(step)}
