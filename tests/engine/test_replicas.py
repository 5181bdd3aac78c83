"""Several engines on one database: any engine answers any call, and an engine whose lease
was fenced (paused, or cut off from the database, past its lease) writes nothing it decided
afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from pymongo import AsyncMongoClient

from services.auth import ADMIN, RUNNER
from services.engine.store.embedded import free_port
from tests.faults.proxy import FaultProxy
from tests.stack import (
    Client,
    EngineProcess,
    Pioneer,
    authenticated,
    engine_process_env,
    error_info,
    step_successes,
    token,
    wait_for_runner,
    wait_serving,
)

HANDLER = "replica-test"
# Long enough that only a missed heartbeat ends an attempt.
STEP = {"handler": HANDLER, "heartbeat_timeout_seconds": 2, "timeout_seconds": 600}


@dataclass
class Engine:
    process: EngineProcess
    client: Client
    # Polls as a step runner would (the test is the runner).
    queue: sq_grpc.StepQueueServiceStub
    runner_channel: grpc.aio.Channel

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid


@contextlib.asynccontextmanager
async def engine(mongo_uri: str, database: str, log: Path) -> AsyncIterator[Engine]:
    port = free_port()
    process = EngineProcess(engine_process_env(mongo_uri, database, port), log)
    process.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(target, interceptors=authenticated(RUNNER))
    running = Engine(process, Client(target), sq_grpc.StepQueueServiceStub(channel), channel)
    try:
        await wait_serving(target)
        yield running
    finally:
        await running.client.close()
        await channel.close()
        if process.process is not None and process.process.poll() is None:
            process.process.send_signal(signal.SIGCONT)
        # In a thread: this loop runs the fault proxy, which the engine needs to stop.
        await asyncio.to_thread(process.stop)


async def offer_handler(at: Engine) -> None:
    """A poll that takes nothing: `at` then knows a runner offers HANDLER."""
    await at.queue.PollStepAttempts(
        sq.PollStepAttemptsRequest(
            runner_id="replica-test-runner", handlers=[HANDLER], max_attempts=1, wait_seconds=0
        ),
        timeout=10,
    )


async def take_attempts(at: Engine, count: int) -> list[Any]:
    """Polls `at` until it handed out `count` attempts."""
    tasks: list[Any] = []
    deadline = time.monotonic() + 30
    while len(tasks) < count and time.monotonic() < deadline:
        reply = await at.queue.PollStepAttempts(
            sq.PollStepAttemptsRequest(
                runner_id="replica-test-runner",
                handlers=[HANDLER],
                max_attempts=count - len(tasks),
                wait_seconds=5,
            ),
            timeout=10,
        )
        tasks.extend(reply.tasks)
    assert len(tasks) == count, f"took {len(tasks)} of {count} attempts"
    return tasks


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.1)


async def test_any_engine_answers_the_calls_for_an_execution_another_one_holds(
    mongo_server: str, database: str, tmp_path: Path
) -> None:
    async with (
        engine(mongo_server, database, tmp_path / "a.log") as a,
        engine(mongo_server, database, tmp_path / "b.log") as b,
    ):
        await offer_handler(a)
        workflow = await a.client.create_workflow("forwarded", {"name": "only", **STEP})
        done = await a.client.start(workflow.workflow_id, {"n": 1})
        cancelled = await a.client.start(workflow.workflow_id, {"n": 2})
        tasks = {t.execution_id: t for t in await take_attempts(a, 2)}
        task = tasks[done.execution_id]

        # A runner's reports reach B, which does not hold the execution: A logs them.
        progress = sr.ReportStepProgressRequest(
            execution_id=task.execution_id,
            step_name=task.step_name,
            attempt_token=task.attempt_token,
            progress=ex_pb.StepProgress(percentage=50, message="half"),
        )
        reply = await b.client.reports.ReportStepProgress(progress, timeout=10)
        assert not reply.cancel_requested
        # A refusal comes back from A as A gave it, details and all.
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await b.client.reports.CompleteStep(
                sr.CompleteStepRequest(
                    execution_id=task.execution_id,
                    step_name=task.step_name,
                    attempt_token="not-a-token",
                    success=True,
                ),
                timeout=10,
            )
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(stale.value)[0] == "STALE_ATTEMPT"
        await b.client.reports.CompleteStep(
            sr.CompleteStepRequest(
                execution_id=task.execution_id,
                step_name=task.step_name,
                attempt_token=task.attempt_token,
                success=True,
                result=None,
            ),
            timeout=10,
        )
        final = await b.client.wait_terminal(done.execution_id, 30)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED

        # A client's command too.
        reply_c = await b.client.executions.CancelExecution(
            es.CancelExecutionRequest(execution_id=cancelled.execution_id, reason="enough"),
            timeout=10,
        )
        assert reply_c.execution.status == ex_pb.EXECUTION_STATUS_CANCELLED

        # Another tenant's execution is missing, wherever it is held.
        other = Client(b.client.target, token=token(ADMIN, tenant="someone-else"))
        try:
            still_running = await a.client.start(workflow.workflow_id, {"n": 3})
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await other.executions.CancelExecution(
                    es.CancelExecutionRequest(execution_id=still_running.execution_id),
                    timeout=10,
                )
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await other.close()

        events = await a.client.events(done.execution_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.type for e in events].count(ex_pb.EVENT_TYPE_STEP_PROGRESS) == 1


async def lease_owners(mongo_uri: str, database: str, ids: list[str]) -> dict[str, str]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        db = client[database]
        executions = db["executions"].find({"_id": {"$in": ids}}, {"lease_owner": 1})
        owners = {d["_id"]: d["lease_owner"] async for d in executions}
        leases = {d["_id"]: d async for d in db["engine_leases"].find({})}
        return {i: leases[o]["engine_id"] if o in leases else str(o) for i, o in owners.items()}
    finally:
        await client.close()


async def keep_alive(at: Engine, tasks: list[Any], stop: asyncio.Event) -> None:
    """Heartbeats every attempt through `at`, as a runner still running them would; a
    heartbeat that finds no engine holding the execution is simply sent again."""
    while not stop.is_set():
        for task in tasks:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await at.client.reports.ReportStepProgress(
                    sr.ReportStepProgressRequest(
                        execution_id=task.execution_id,
                        step_name=task.step_name,
                        attempt_token=task.attempt_token,
                    ),
                    timeout=1,
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)


async def complete_through(survivor: Engine, tasks: list[Any], ids: list[str]) -> None:
    """Completes `tasks` through `survivor`: the runs complete, every step ran once (one
    attempt queued, one taken), and seq is gapless."""
    for task in tasks:
        await survivor.client.reports.CompleteStep(
            sr.CompleteStepRequest(
                execution_id=task.execution_id,
                step_name=task.step_name,
                attempt_token=task.attempt_token,
                success=True,
            ),
            timeout=10,
        )
    for execution_id in ids:
        final = await survivor.client.wait_terminal(execution_id, 30)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
        events = await survivor.client.events(execution_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        types = [e.type for e in events]
        # One attempt: a fenced engine's view (no heartbeat for seconds) never got in, and
        # no attempt was taken twice.
        assert types.count(ex_pb.EVENT_TYPE_STEP_QUEUED) == 1, types
        assert types.count(ex_pb.EVENT_TYPE_STEP_STARTED) == 1, types


async def run_past_the_lease(
    a: Engine,
    b: Engine,
    mongo_uri: str,
    database: str,
    fault: Callable[[], None],
    heal: Callable[[], None],
    what: str,
) -> None:
    """A holds five runs whose attempts the test took and heartbeats through B. `fault` keeps
    A from renewing its lease; once B holds every run, `heal` lets A go on. A's heartbeat
    timers are overdue by then, and it would retry every step if it could still write."""
    await offer_handler(a)
    workflow = await a.client.create_workflow("fenced", {"name": "only", **STEP})
    ids = [(await a.client.start(workflow.workflow_id, {"n": n})).execution_id for n in range(5)]
    tasks = await take_attempts(a, len(ids))
    stop = asyncio.Event()
    heartbeats = asyncio.create_task(keep_alive(b, tasks, stop))
    try:
        fault()
        since = time.monotonic()

        async def taken_over() -> bool:
            owners = await lease_owners(mongo_uri, database, ids)
            return set(owners.values()) == {b.process.env["ENGINE_ID"]}

        await eventually(taken_over, 30, "B holds every execution")
        print(f"\ntakeover: B held all 5 runs {time.monotonic() - since:.1f} s after {what}")
        heal()
        await eventually(lambda: _logged(a, "this engine's lease was fenced"), 60, "A's fence")
    finally:
        stop.set()
        await heartbeats
    await complete_through(b, tasks, ids)


async def _logged(at: Engine, text: str) -> bool:
    return text in at.process.log_path.read_text(errors="replace")


async def test_a_paused_engine_writes_nothing_once_another_took_over(
    mongo_server: str, database: str, tmp_path: Path
) -> None:
    async with (
        engine(mongo_server, database, tmp_path / "a.log") as a,
        engine(mongo_server, database, tmp_path / "b.log") as b,
    ):
        process = a.process.process
        assert process is not None
        await run_past_the_lease(
            a,
            b,
            mongo_server,
            database,
            lambda: process.send_signal(signal.SIGSTOP),
            lambda: process.send_signal(signal.SIGCONT),
            "A paused",
        )


async def test_an_engine_cut_off_from_the_database_writes_nothing_once_another_took_over(
    mongo_server: str, database: str, tmp_path: Path
) -> None:
    upstream = urlsplit(mongo_server)
    assert upstream.hostname is not None and upstream.port is not None
    async with FaultProxy(upstream.hostname, upstream.port) as proxy:
        # Direct: a driver that followed the server's own address (it says it is a
        # replica set member) would go round the proxy.
        through_proxy = (
            mongo_server.replace(f"{upstream.hostname}:{upstream.port}", proxy.target, 1)
            + "&directConnection=true"
        )
        async with (
            engine(through_proxy, database, tmp_path / "a.log") as a,
            engine(mongo_server, database, tmp_path / "b.log") as b,
        ):
            await run_past_the_lease(
                a, b, mongo_server, database, proxy.blackhole, proxy.heal, "the cut"
            )


async def test_a_runner_polling_one_engine_gets_the_work_every_engine_holds(
    mongo_server: str, database: str, tmp_path: Path
) -> None:
    async with engine(mongo_server, database, tmp_path / "a.log") as a:
        await offer_handler(a)
        workflow = await a.client.create_workflow("pulled", {"name": "only", **STEP})
        # Queued before B started: B learns of them from the status documents.
        early = [
            (await a.client.start(workflow.workflow_id, {"n": n})).execution_id for n in (1, 2)
        ]
        await asyncio.sleep(6)  # the status documents of runs still queued are written by now
        async with engine(mongo_server, database, tmp_path / "b.log") as b:
            # Queued while B runs: B learns of them from the event log's change stream.
            late = [
                (await a.client.start(workflow.workflow_id, {"n": n})).execution_id
                for n in (3, 4, 5)
            ]
            ids = early + late
            tasks = await take_attempts(b, len(ids))
            assert sorted(t.execution_id for t in tasks) == sorted(ids)
            owners = await lease_owners(mongo_server, database, ids)
            assert set(owners.values()) == {a.process.env["ENGINE_ID"]}, "A still holds them"
            await complete_through(b, tasks, ids)
            # A's own runner found nothing left: every attempt was taken once, through B.
            leftover = await a.queue.PollStepAttempts(
                sq.PollStepAttemptsRequest(
                    runner_id="a-runner", handlers=[HANDLER], max_attempts=5, wait_seconds=0
                ),
                timeout=10,
            )
            assert not leftover.tasks


async def test_runners_of_every_engine_finish_every_run_when_an_engine_is_killed(
    mongo_server: str, database: str, tmp_path: Path
) -> None:
    async with (
        engine(mongo_server, database, tmp_path / "a.log") as a,
        engine(mongo_server, database, tmp_path / "b.log") as b,
    ):
        both = f"ipv4:{a.client.target},{b.client.target}"
        pioneer = Pioneer(0, slots=8, name="both-engines", target=both)
        await pioneer.start()
        try:
            await wait_for_runner(b.client.queue, pioneer.name)
            step = {
                "handler": "sleep",
                "heartbeat_timeout_seconds": 3,
                "retry": {"max_attempts": 3},
            }
            workflow = await a.client.create_workflow(
                "survives", {"name": "one", **step}, {"name": "two", **step}
            )
            ids = [
                (await at.client.start(workflow.workflow_id, {"seconds": 0.5})).execution_id
                for at in (a, b)
                for _ in range(8)
            ]
            await asyncio.sleep(1.0)  # mid-run: steps taken, reports flowing through both
            a.process.kill()
            for execution_id in ids:
                final = await b.client.wait_terminal(execution_id, 60)
                assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED, execution_id
                events = await b.client.events(execution_id)
                assert [e.seq for e in events] == list(range(1, len(events) + 1))
                assert step_successes(events) == {1: 1, 2: 1}, events
        finally:
            await pioneer.stop()
