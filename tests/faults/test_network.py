"""Network faults between the real services, through the fault proxy (tests/faults/proxy.py):
latency and a blackhole between pioneer (its polls for work and its reports) and the engine,
resets and a silent dead connection under a WatchExecution stream, cut and sliced traffic
between the gateway and the engine.

Each test prints what it measured; `pytest -s` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.auth import ANY_TENANT, RUNNER, ServiceToken
from services.engine.app import Engine
from services.gateway.config import Settings as GatewaySettings
from services.gateway.engine import channel_options as gateway_channel_options
from services.pioneer.poller import StepPoller
from services.pioneer.registry import registry as step_registry
from services.pioneer.reporter import (
    MESSAGE_SIZE_OPTIONS,
    RECONNECT_OPTIONS,
    RetryPolicy,
    StepReporter,
)
from services.pioneer.runner import StepRunner
from services.pioneer.server import build_server as build_pioneer
from tests.faults.proxy import FaultProxy
from tests.gateway.harness import start_gateway
from tests.stack import (
    AUTHORITY,
    Client,
    Pioneer,
    Stack,
    as_dict,
    authenticated,
    engine_settings,
    free_port,
    token,
    wait_for_runner,
)

TERMINAL_EVENTS = {
    ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED,
    ex_pb.EVENT_TYPE_WORKFLOW_FAILED,
    ex_pb.EVENT_TYPE_WORKFLOW_CANCELLED,
}
# pioneer's per-call deadline.
PIONEER_CALL_SECONDS = RetryPolicy().call_timeout_seconds
# A watcher reconnects at once after a broken stream: gRPC's own reconnect backoff starts at
# 1 s and grows, which would only slow the test down, not change what it shows. (Not
# min_reconnect_backoff_ms: gRPC also takes it as the connect timeout; see
# test_a_distant_engine_is_reached_at_the_first_call.)
WATCH_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def sleep_steps(*names: str, heartbeat_timeout: float) -> list[dict[str, Any]]:
    return [
        {"name": name, "handler": "sleep", "heartbeat_timeout_seconds": heartbeat_timeout}
        for name in names
    ]


# -- pioneer reporting through the proxy, every report call recorded ------------------------


@dataclass(frozen=True)
class ReportCall:
    method: str
    code: grpc.StatusCode
    started: float
    seconds: float
    deadline: float | None
    details: str


class _CallRecorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Records the outcome and duration of each of pioneer's unary calls to the engine: its
    reports and its polls for work."""

    def __init__(self, calls: list[ReportCall]) -> None:
        self.calls = calls

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        started = time.monotonic()
        call = await continuation(client_call_details, request)
        code = await call.code()
        method = client_call_details.method
        self.calls.append(
            ReportCall(
                method.decode() if isinstance(method, bytes) else str(method),
                code,
                started,
                time.monotonic() - started,
                client_call_details.timeout,
                await call.details() or "",
            )
        )
        return call


def is_report(call: ReportCall) -> bool:
    return "/discovery.engine.v1.StepReportService/" in call.method


def is_poll(call: ReportCall) -> bool:
    return call.method.endswith("/discovery.engine.v1.StepQueueService/PollStepAttempts")


class RecordingPioneer(Pioneer):
    """tests.stack.Pioneer whose channel to the engine records its calls (the same reporter
    and poller otherwise): work reaches it, and its reports leave it, through that channel."""

    def __init__(self, engine_port: int) -> None:
        super().__init__(engine_port)
        self.calls: list[ReportCall] = []

    async def start(self) -> None:
        channel = grpc.aio.insecure_channel(
            self.settings.discovery_url,
            options=MESSAGE_SIZE_OPTIONS + RECONNECT_OPTIONS,
            interceptors=[_CallRecorder(self.calls)],
        )
        credentials = ServiceToken(AUTHORITY, subject=self.name, role=RUNNER, tenant=ANY_TENANT)
        self._reporter = StepReporter(channel, credentials)
        self.runner = StepRunner(self._reporter, max_concurrent_steps=self.slots)
        self._server, self.port = await build_pioneer(self.settings, step_registry, self.runner)
        await self._server.start()
        self._poller = StepPoller(channel, credentials, self.runner, step_registry, self.name)
        self._poller.start()


@dataclass
class ProxiedPioneer:
    proxy: FaultProxy
    pioneer: RecordingPioneer
    client: Client  # straight to the engine


@asynccontextmanager
async def pioneer_behind_proxy(mongo_server: str, database: str) -> AsyncIterator[ProxiedPioneer]:
    """Engine and pioneer in this process; pioneer's DISCOVERY_URL is the proxy, so that its
    polls for work and its reports go through it."""
    engine_port = free_port()
    async with FaultProxy("127.0.0.1", engine_port, seed=12) as proxy:
        engine = Engine(engine_settings(mongo_server, database, engine_port))
        await engine.start()
        pioneer = RecordingPioneer(proxy.port)
        await pioneer.start()
        client = Client(f"127.0.0.1:{engine.port}")
        try:
            await wait_for_runner(client.queue, pioneer.name)
            yield ProxiedPioneer(proxy, pioneer, client)
        finally:
            await client.close()
            # Pioneer first: a poll it sent to an engine already stopped would be recorded.
            await pioneer.stop()
            await engine.stop(grace=0)


def finished_steps(events: list[ex_pb.ExecutionEvent]) -> list[tuple[str, str]]:
    finished = [e for e in events if e.type == ex_pb.EVENT_TYPE_STEP_FINISHED]
    return [(as_dict(e.data)["step"], as_dict(e.data)["status"]) for e in finished]


async def test_latency_between_pioneer_and_engine_costs_time_not_attempts(
    mongo_server: str, database: str
) -> None:
    async with pioneer_behind_proxy(mongo_server, database) as s:
        s.proxy.latency(500, jitter_ms=100)  # each way: about a second per round trip
        workflow = await s.client.create_workflow(
            "latency", *sleep_steps("first", "second", heartbeat_timeout=10)
        )
        started_at = time.monotonic()
        started = await s.client.start(workflow.workflow_id, {"seconds": 1})
        final = await s.client.wait_terminal(started.execution_id, 30)
        took = time.monotonic() - started_at
        events = await s.client.events(started.execution_id)

    calls = s.pioneer.calls
    # A poll lasts as long as it waits for work: only the reports measure a round trip.
    ok = [c.seconds for c in calls if is_report(c) and c.code == grpc.StatusCode.OK]
    polls = [c for c in calls if is_poll(c)]
    refused = [c for c in calls if c.code != grpc.StatusCode.OK]
    print(
        f"\nlatency 500±100 ms each way: 2 x 1 s steps completed in {took:.2f} s; "
        f"{len(ok)} report calls OK, round trip median {statistics.median(ok):.2f} s, "
        f"max {max(ok):.2f} s (deadline {PIONEER_CALL_SECONDS:g} s); {len(polls)} polls "
        f"({sorted(c.code.name for c in polls)}); "
        f"{len(refused)} refused at once while connecting: "
        f"{sorted({(c.code.name, c.details) for c in refused})}"
    )
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert [(a.step_name, a.attempt, a.status) for a in final.steps_history] == [
        ("first", 1, ex_pb.ATTEMPT_STATUS_SUCCESS),
        ("second", 1, ex_pb.ATTEMPT_STATUS_SUCCESS),
    ]
    assert finished_steps(events) == [("first", "success"), ("second", "success")]
    # Zero DEADLINE_EXCEEDED, reports and polls alike. The only refusals are pioneer's
    # connection attempts, which its reconnect options cut short (see
    # test_a_distant_engine_is_reached_at_the_first_call); the reporter and the poller retry
    # them.
    assert grpc.StatusCode.DEADLINE_EXCEEDED not in {c.code for c in calls}
    for call in refused:
        assert call.code == grpc.StatusCode.UNAVAILABLE, call
        assert "before receiving SETTINGS frame" in call.details, call
    assert any(c.method.endswith("/CompleteStep") for c in calls)
    # Both steps came to pioneer through the delayed path, in answer to its polls.
    assert sum(1 for c in polls if c.code == grpc.StatusCode.OK) >= 2
    # The reports really went through the delay: no round trip is shorter than 2 x 400 ms.
    assert min(ok) >= 0.8


async def test_a_blackhole_between_pioneer_and_engine_times_out_then_heals(
    mongo_server: str, database: str
) -> None:
    blackhole_seconds = 6.0
    async with pioneer_behind_proxy(mongo_server, database) as s:
        # The heartbeat timeout outlasts the blackhole: the engine keeps the attempt.
        workflow = await s.client.create_workflow(
            "blackhole", *sleep_steps("first", "second", heartbeat_timeout=15)
        )
        started = await s.client.start(workflow.workflow_id, {"seconds": 3})
        await asyncio.sleep(1.0)  # the first step runs and reports
        s.proxy.blackhole()
        blackholed_at = time.monotonic()
        await asyncio.sleep(blackhole_seconds)
        s.proxy.heal()
        healed_at = time.monotonic()
        final = await s.client.wait_terminal(started.execution_id, 30)
        recovered = time.monotonic() - healed_at
        events = await s.client.events(started.execution_id)

    calls = s.pioneer.calls
    during = [c for c in calls if blackholed_at <= c.started < healed_at]
    timed_out = [c for c in calls if c.code == grpc.StatusCode.DEADLINE_EXCEEDED]
    slowest = max(c.seconds for c in calls)
    print(
        f"\nblackhole {blackhole_seconds:g} s mid-step: {len(timed_out)} report calls ended "
        f"DEADLINE_EXCEEDED after {[round(c.seconds, 2) for c in timed_out]} s "
        f"(deadline {PIONEER_CALL_SECONDS:g} s); slowest call {slowest:.2f} s; "
        f"{len(during)} calls began in the blackhole; completed {recovered:.2f} s after heal"
    )
    # Calls fail with their deadline instead of hanging.
    assert timed_out, "no report call ran into the blackhole's deadline"
    assert {c.code for c in calls} <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    for call in calls:
        assert call.deadline is not None
        assert call.seconds <= call.deadline + 0.5, call
    # After the heal: completed, one attempt per step, each step finished exactly once (I3),
    # and the log is gap-free.
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert [(a.step_name, a.attempt) for a in final.steps_history] == [
        ("first", 1),
        ("second", 1),
    ]
    assert finished_steps(events) == [("first", "success"), ("second", "success")]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # I5: each step's completion was acknowledged, and is in the log (above) once.
    acknowledged = [
        c for c in calls if c.method.endswith("/CompleteStep") and c.code == grpc.StatusCode.OK
    ]
    assert len(acknowledged) >= 2
    # The held reports that arrived after the heal did not move progress backwards.
    progress: dict[int, list[float]] = {}
    for event in events:
        if event.type == ex_pb.EVENT_TYPE_STEP_PROGRESS:
            data = as_dict(event.data)
            progress.setdefault(int(data["order"]), []).append(data["progress"]["percentage"])
    assert progress and all(p == sorted(p) for p in progress.values()), progress


# -- WatchExecution through the proxy: a resuming watcher -----------------------------------


@dataclass
class Watched:
    """Everything one resuming watcher received, duplicates included."""

    seqs: list[int] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    # (code, monotonic time) of each broken stream.
    breaks: list[tuple[grpc.StatusCode, float]] = field(default_factory=list)
    done: bool = False

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0


async def follow(
    channel: grpc.aio.Channel,
    execution_id: str,
    watched: Watched,
    *,
    seconds: float,
    max_resumes: int = 40,
    resumable: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE}),
) -> None:
    """Watches until the terminal event, reopening a broken stream with after_seq = the last
    seq received. Bounded by `seconds` in all and `max_resumes` reopenings."""
    stub = es_grpc.ExecutionServiceStub(channel)
    deadline = time.monotonic() + seconds
    for _ in range(max_resumes + 1):
        request = es.WatchExecutionRequest(execution_id=execution_id, after_seq=watched.last_seq)
        try:
            async for item in stub.WatchExecution(
                request, timeout=max(deadline - time.monotonic(), 0.1)
            ):
                watched.seqs.append(item.event.seq)
                watched.types.append(item.event.type)
                if item.event.type in TERMINAL_EVENTS:
                    watched.done = True
                    return
            raise AssertionError(f"the stream ended before the terminal event: {watched}")
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in resumable:
                raise
            watched.breaks.append((exc.code(), time.monotonic()))
        await asyncio.sleep(0.05)
    raise AssertionError(f"more than {max_resumes} resumes: {watched.breaks}")


async def test_resets_under_a_watch_stream_lose_and_repeat_nothing(stack: Stack) -> None:
    rng = random.Random(14)
    c = stack.client
    workflow = await c.create_workflow(
        "resets", *sleep_steps("first", "second", heartbeat_timeout=5)
    )
    async with FaultProxy("127.0.0.1", stack.engine.port) as proxy:
        channel = grpc.aio.insecure_channel(
            proxy.target, options=WATCH_CHANNEL_OPTIONS, interceptors=authenticated()
        )
        try:
            started = await c.start(workflow.workflow_id, {"seconds": 2.5})
            watched = Watched()
            watcher = asyncio.create_task(
                follow(channel, started.execution_id, watched, seconds=30)
            )
            # Five resets at seeded random times, one in each 0.9 s slot of the ~5 s run.
            began = time.monotonic()
            hits: list[int] = []
            for slot in range(5):
                at = began + 0.2 + slot * 0.9 + rng.uniform(0.0, 0.7)
                await asyncio.sleep(max(at - time.monotonic(), 0))
                hits.append(proxy.reset_peers())
            await asyncio.wait_for(watcher, 30)
        finally:
            await channel.close()
    log = await c.events(started.execution_id)

    print(
        f"\n5 resets (connections hit: {hits}) under WatchExecution: {len(watched.breaks)} "
        f"broken streams ({sorted({code.name for code, _ in watched.breaks})}), "
        f"resumed with after_seq; received seqs 1..{watched.last_seq} "
        f"({len(watched.seqs)} events, log has {len(log)})"
    )
    assert watched.done
    # Exactly 1..n: no gap, no duplicate, and what the log holds.
    assert watched.seqs == list(range(1, len(log) + 1))
    assert watched.types == [e.type for e in log]
    # The resets did break the stream (else the test shows nothing).
    assert sum(1 for h in hits if h) >= 4
    assert len(watched.breaks) >= 4


def keepalive(time_ms: int, timeout_ms: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.keepalive_time_ms", time_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        # A watcher sends nothing after its request; by default gRPC stops pinging after two
        # pings without data of its own (grpc.http2.max_pings_without_data = 2).
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def watch_until_events(
    channel: grpc.aio.Channel, execution_id: str, watched: Watched, count: int
) -> asyncio.Task[None]:
    """A resuming watcher in the background, once it has received `count` events."""
    task = asyncio.create_task(follow(channel, execution_id, watched, seconds=25))
    for _ in range(100):
        if len(watched.seqs) >= count or task.done():
            break
        await asyncio.sleep(0.05)
    assert len(watched.seqs) >= count, watched
    return task


async def test_a_silent_dead_watch_connection_is_found_by_a_client_keepalive(
    stack: Stack,
) -> None:
    """The engine's own keepalive (services/engine/rpc/server.py `_KEEPALIVE`: a ping every
    30 s) only ever closes the engine's side: its GOAWAY or RST cannot cross a dead path, so
    a client without a keepalive of its own waits on a dead stream until its deadline
    (tests.stack.Client: 120 s). A client keepalive finds it. 10 s is the shortest ping
    interval the engine accepts (min_ping_interval_without_data 10 s); the ACK wait is
    grpc.http2.ping_timeout_ms, which this gRPC uses for keepalive pings in place of
    keepalive_timeout_ms (the gateway and the CLI set both)."""
    time_ms, timeout_ms = 10_000, 3_000
    c = stack.client
    workflow = await c.create_workflow("silent", *sleep_steps("long", heartbeat_timeout=5))
    async with FaultProxy("127.0.0.1", stack.engine.port) as proxy:
        with_keepalive = grpc.aio.insecure_channel(
            proxy.target,
            interceptors=authenticated(),
            options=[
                *WATCH_CHANNEL_OPTIONS,
                *keepalive(time_ms, timeout_ms),
                ("grpc.http2.ping_timeout_ms", timeout_ms),
            ],
        )
        without_keepalive = grpc.aio.insecure_channel(
            proxy.target, options=WATCH_CHANNEL_OPTIONS, interceptors=authenticated()
        )
        try:
            started = await c.start(workflow.workflow_id, {"seconds": 12})
            alive, control = Watched(), Watched()
            watcher = await watch_until_events(with_keepalive, started.execution_id, alive, 3)
            silent = await watch_until_events(without_keepalive, started.execution_id, control, 3)
            # The open connections die silently; a new connection gets through (a NAT forgot
            # the old mapping), so a client that notices can resume at once.
            proxy.blackhole(new_connections=False)
            died_at = time.monotonic()
            control_seq_at_death = control.last_seq
            await asyncio.wait_for(watcher, 25)
            await asyncio.sleep(1.0)
            control_state = (control.last_seq, list(control.breaks), silent.done())
            silent.cancel()
            with pytest.raises(asyncio.CancelledError):
                await silent
        finally:
            await with_keepalive.close()
            await without_keepalive.close()
    log = await c.events(started.execution_id)

    assert alive.breaks, "the keepalive watcher never noticed the dead connection"
    code, noticed_at = alive.breaks[0]
    detected = noticed_at - died_at
    print(
        f"\nsilent dead connection: client keepalive {time_ms / 1000:g} s + ping timeout "
        f"{timeout_ms / 1000:g} s found it after {detected:.2f} s ({code.name}), resumed with "
        f"after_seq and read on to seq {alive.last_seq}; the watcher without keepalive was "
        f"still waiting {time.monotonic() - died_at:.1f} s after, at seq {control_state[0]}, "
        "with no error"
    )
    assert detected <= (time_ms + timeout_ms) / 1000 + 2
    assert alive.done
    assert alive.seqs == list(range(1, len(log) + 1))
    assert alive.types == [e.type for e in log]
    # Without a client keepalive nothing happens: no error, no event, no end.
    assert control_state == (control_seq_at_death, [], False)


def with_keepalive(options: list[tuple[str, Any]], time_ms: int, timeout_ms: int) -> list[Any]:
    """A product's channel options with its keepalive interval and timeout scaled down (so a
    test can wait for them) and everything else as it ships."""
    scaled = {
        "grpc.keepalive_time_ms": time_ms,
        "grpc.keepalive_timeout_ms": timeout_ms,
        "grpc.http2.ping_timeout_ms": timeout_ms,
    }
    assert set(scaled) <= {name for name, _ in options}
    return [(name, scaled.get(name, value)) for name, value in options]


async def test_the_gateways_keepalive_finds_a_dead_watch_connection_in_time(
    stack: Stack,
) -> None:
    time_ms, timeout_ms = 5_000, 2_000  # the shipped 20 s + 10 s, scaled down
    options = with_keepalive(gateway_channel_options(GatewaySettings()), time_ms, timeout_ms)
    c = stack.client
    workflow = await c.create_workflow("gw-keepalive", *sleep_steps("long", heartbeat_timeout=5))
    async with FaultProxy("127.0.0.1", stack.engine.port) as proxy:
        channel = grpc.aio.insecure_channel(
            proxy.target, options=options, interceptors=authenticated()
        )
        try:
            started = await c.start(workflow.workflow_id, {"seconds": 12})
            watched = Watched()
            watcher = await watch_until_events(channel, started.execution_id, watched, 3)
            proxy.blackhole(new_connections=False)
            bound = (time_ms + timeout_ms) / 1000 + 2
            for _ in range(int(bound / 0.05)):
                if watched.breaks:
                    break
                await asyncio.sleep(0.05)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        finally:
            await channel.close()
    print(f"\ngateway keepalive options, {time_ms / 1000:g}+{timeout_ms / 1000:g} s: {watched}")
    assert watched.breaks, f"the dead connection went unnoticed for {bound:g} s"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param([], id="grpc-defaults"),
        pytest.param(
            MESSAGE_SIZE_OPTIONS + RECONNECT_OPTIONS,
            id="pioneer",
        ),
        pytest.param(
            gateway_channel_options(GatewaySettings()),
            id="gateway",
        ),
    ],
)
async def test_a_distant_engine_is_reached_at_the_first_call(
    stack: Stack, options: list[tuple[str, Any]]
) -> None:
    """An engine 500 ms away (each way) answers the first call of a fresh channel that has
    a 5 s deadline, as pioneer's and the gateway's calls have."""
    async with FaultProxy("127.0.0.1", stack.engine.port) as proxy:
        proxy.latency(500)
        async with grpc.aio.insecure_channel(proxy.target, options=options) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            started = time.monotonic()
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                raise AssertionError(
                    f"{exc.code().name} after {time.monotonic() - started:.2f} s: {exc.details()}"
                ) from None
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- gateway -> engine through the proxy ----------------------------------------------------


async def test_cut_and_sliced_engine_traffic_gives_the_gateway_502_503_never_500(
    stack: Stack,
) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "gateway", *sleep_steps("first", "second", heartbeat_timeout=5)
    )
    started = await c.start(workflow.workflow_id, {"seconds": 0.1})
    await c.wait_terminal(started.execution_id, 20)
    async with FaultProxy("127.0.0.1", stack.engine.port) as proxy:
        gateway = await start_gateway(proxy.port, rpc_timeout_seconds=3.0)
        path = f"{gateway.url}/executions/{started.execution_id}/status"
        try:
            async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {token()}"}
            ) as session:

                async def get() -> tuple[int, bytes]:
                    async with session.get(path) as response:
                        return response.status, await response.read()

                status, healthy = await get()
                assert status == 200
                seen: dict[str, list[int]] = {}
                codes: set[str] = set()

                async def phase(name: str, calls: int, pause: float = 0.0) -> None:
                    for _ in range(calls):
                        await asyncio.sleep(pause)
                        status, body = await get()
                        seen.setdefault(name, []).append(status)
                        if status == 200:
                            # Never a partial or corrupted message passed on as an answer.
                            assert body == healthy, name
                        else:
                            assert status in (502, 503), (name, status, body)
                            codes.add(json.loads(body)["error"]["code"])

                proxy.slicer(7, delay_ms=1)
                await phase("slicer 7 B / 1 ms", 3)
                proxy.heal()
                # Each connection is cut after `limit` bytes one way: mid-handshake, mid-request
                # or mid-response. (A status call is ~100 B up and ~700 B down; the handshake
                # ~400 B up and ~200 B down.) Spaced calls let the channel reconnect between.
                for limit in (3_000, 1_500, 600, 0):
                    proxy.limit_data(limit)
                    await phase(f"limit_data {limit} B", 6, pause=0.15)
                proxy.heal()
                # After the heal the channel reconnects (its backoff is at most 2 s).
                healed_at = time.monotonic()
                for _ in range(60):
                    status, _ = await get()
                    if status == 200:
                        break
                    await asyncio.sleep(0.1)
                recovered = time.monotonic() - healed_at
                await phase("healed", 3)
        finally:
            await gateway.stop()

    print(
        f"\ngateway -> engine faults, GET status: {seen}; error codes {sorted(codes)}; "
        f"200 again {recovered:.2f} s after heal"
    )
    assert seen["slicer 7 B / 1 ms"] == [200] * 3
    assert seen["healed"] == [200] * 3
    # The cuts did reach the gateway's engine calls, and each error names its cause.
    assert 503 in seen["limit_data 0 B"] and all(codes)
