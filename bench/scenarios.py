"""The scenarios, one round each: what a user of the public APIs sees, timed from outside.

Each returns plain figures (dicts of floats, lists of samples) for bench/report.py; a
correctness failure (a run that did not complete, progress events missing) is returned in
`failures`, never raised, so that the other figures are still printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from bench.stack import ROOT_ENV, Stack, cpu_seconds, rss_bytes
from bench.steps import PROGRESS_REPORTS
from discovery_client.requests import struct
from tests.stack import Client, EngineProcess, as_dict, free_port, token, wait_serving

STEPS = 5
PROGRESS_PER_RUN = STEPS * PROGRESS_REPORTS
TERMINAL_EVENTS = {
    ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED,
    ex_pb.EVENT_TYPE_WORKFLOW_FAILED,
    ex_pb.EVENT_TYPE_WORKFLOW_CANCELLED,
}


@dataclass
class Round:
    figures: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def progress_workflow(client: Client) -> str:
    step = {"handler": "progress3", "heartbeat_timeout_seconds": 60, "timeout_seconds": 600}
    workflow = await client.create_workflow(
        "bench-progress3", *({"name": f"step-{i}", **step} for i in range(1, STEPS + 1))
    )
    return workflow.workflow_id


@dataclass
class Watched:
    execution_id: str
    status: int = 0
    progress: int = 0
    events: int = 0
    last_seq: int = 0
    ended: float = 0.0
    error: str = ""


async def watch_to_end(client: Client, execution_id: str, seconds: float) -> Watched:
    """Every event of the run from seq 1 (a replay, then live) up to its terminal event."""
    seen = Watched(execution_id)
    request = es.WatchExecutionRequest(execution_id=execution_id, after_seq=0)
    try:
        async for item in client.executions.WatchExecution(request, timeout=seconds):
            event = item.event
            seen.events += 1
            seen.last_seq = event.seq
            if event.type == ex_pb.EVENT_TYPE_STEP_PROGRESS:
                seen.progress += 1
            if event.type in TERMINAL_EVENTS:
                seen.ended = time.monotonic()
                seen.status = event.type
                break
    except grpc.aio.AioRpcError as exc:
        seen.error = f"{exc.code().name}: {exc.details()}"
    return seen


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: with 50 samples, p99 is the slowest, as a reader expects."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cpu_per_run(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    """Per completed run; with none completed there is no such figure (NaN, left out)."""
    return {
        f"cpu_ms_{name}": (after[name] - before[name]) * 1000 / runs if runs else math.nan
        for name in before
    }


async def latency(stack: Stack, runs: int, warmup: int, deadline: float) -> Round:
    """Runs one after another: start + watch to the terminal event, then the sync RPC."""
    assert stack.client is not None
    client = stack.client
    result = Round()
    workflow_id = await progress_workflow(client)
    end = time.monotonic() + deadline

    async def start_and_watch() -> float:
        began = time.monotonic()
        execution = await client.start(workflow_id)
        seen = await watch_to_end(client, execution.execution_id, max(end - time.monotonic(), 1))
        if seen.status != ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED:
            result.failures.append(f"latency: run {execution.execution_id} did not complete")
        return (seen.ended or time.monotonic()) - began

    async def execute() -> float:
        began = time.monotonic()
        reply: es.ExecuteWorkflowResponse = await client.executions.ExecuteWorkflow(
            es.ExecuteWorkflowRequest(workflow_id=workflow_id, input=struct({}), wait_seconds=60),
            timeout=max(end - time.monotonic(), 1),
        )
        took = time.monotonic() - began
        if not reply.finished or reply.execution.status != ex_pb.EXECUTION_STATUS_COMPLETED:
            result.failures.append(
                f"latency: ExecuteWorkflow of {reply.execution.execution_id} did not complete"
            )
        return took

    for name, call in (("start_watch", start_and_watch), ("execute", execute)):
        for _ in range(warmup):
            await call()
        before = stack.cpu()
        samples: list[float] = []
        for _ in range(runs):
            if time.monotonic() > end:
                result.failures.append(f"latency ({name}): deadline reached after {len(samples)}")
                break
            samples.append((await call()) * 1000)
        after = stack.cpu()
        result.samples[f"{name}_ms"] = samples
        if samples:
            for q in (50, 90, 99):
                result.figures[f"{name}_p{q}_ms"] = quantile(samples, q / 100)
        for key, value in cpu_per_run(before, after, len(samples)).items():
            result.figures[f"latency_{name}_{key}"] = value
    return result


async def throughput(stack: Stack, runs: int, deadline: float) -> Round:
    """`runs` runs started at once, each watched from seq 1 on its own stream."""
    assert stack.client is not None
    result = Round()
    figures, result.failures = await _at_once(
        "throughput", [stack.client], runs, deadline, stack.pids()
    )
    result.figures.update(
        {k: v for k, v in figures.items() if not k.startswith("cpu_ms_")},
        **{f"throughput_{k}": v for k, v in figures.items() if k.startswith("cpu_ms_")},
    )
    return result


async def _at_once(
    name: str, clients: list[Client], runs: int, deadline: float, pids: dict[str, int]
) -> tuple[dict[str, float], list[str]]:
    """`runs` runs started at once, spread over `clients` (engines) in turn, each watched from
    seq 1 on the engine it started on; its figures, with the CPU each of `pids` spent per
    completed run, and its failures."""
    failures: list[str] = []
    workflow_id = await progress_workflow(clients[0])
    before = {who: cpu_seconds(pid) for who, pid in pids.items()}
    began = time.monotonic()
    end = began + deadline

    async def one(client: Client) -> Watched:
        try:
            execution = await client.start(workflow_id, deadline_seconds=deadline)
        except grpc.aio.AioRpcError as exc:
            return Watched("", error=f"start: {exc.code().name}: {exc.details()}")
        return await watch_to_end(client, execution.execution_id, max(end - time.monotonic(), 1))

    seen = await asyncio.gather(*(one(clients[n % len(clients)]) for n in range(runs)))
    after = {who: cpu_seconds(pid) for who, pid in pids.items()}
    completed = [s for s in seen if s.status == ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED]
    last = max((s.ended for s in seen if s.ended), default=time.monotonic())
    seconds = last - began
    short = [s for s in seen if s.progress < PROGRESS_PER_RUN]
    figures = {
        "runs": runs,
        "completed": len(completed),
        "seconds": seconds,
        "runs_per_s": len(completed) / seconds,
        "events_per_s": sum(s.last_seq for s in seen) / seconds,
        "progress_seen": sum(s.progress for s in seen),
        "progress_expected": runs * PROGRESS_PER_RUN,
        **cpu_per_run(before, after, len(completed)),
    }
    unfinished = [s.execution_id for s in seen if s.execution_id and not s.status]
    if unfinished:
        # Left running, they would load the next round and be counted in its figures.
        await cancel_all(clients[0], unfinished)
        await settle(clients[0])
    if len(completed) < runs:
        errors = sorted({s.error for s in seen if s.error})[:3]
        failures.append(
            f"{name}: {runs - len(completed)} of {runs} runs did not complete within "
            f"{deadline:.0f} s {errors or ''}"
        )
    if short:
        worst = min(short, key=lambda s: s.progress)
        failures.append(
            f"{name}: {len(short)} runs showed fewer than {PROGRESS_PER_RUN} progress events "
            f"on their watch stream (worst: {worst.execution_id or '(not started)'} with "
            f"{worst.progress})"
        )
    return figures, failures


def another_engine(stack: Stack, name: str) -> tuple[EngineProcess, Client]:
    """A second engine on the stack's database, started (the caller waits until it serves,
    and stops it); a client of it."""
    assert stack.engine is not None
    port = free_port()
    engine = EngineProcess(
        {**stack.engine.env, "ENGINE_PORT": str(port), "ENGINE_ID": f"bench-{name}-{port}"},
        stack.workdir / f"{name}-engine.log",
    )
    engine.start()
    return engine, Client(f"127.0.0.1:{port}")


async def engines(stack: Stack, runs: int, deadline: float) -> Round:
    """Throughput on one engine, then on two: `runs` runs at once on the stack's engine (A);
    then a second engine (B) joins the database and the runs alternate between A and B, each
    watched where it started. The stack's pioneer polls A alone and gets B's steps through
    the cluster-wide step queue (as a runner of any engine does). Figures of each, and the
    CPU each process spent per run: where a second engine's cost goes on these 2 cores."""
    assert stack.client is not None and stack.engine is not None
    result = Round()
    one, failures = await _at_once("engines (one)", [stack.client], runs, deadline, stack.pids())
    result.failures += failures
    second, b = another_engine(stack, "second")
    try:
        await wait_serving(b.target)
        assert second.process is not None
        pids = {**stack.pids(), "engine_b": second.process.pid}
        two, failures = await _at_once("engines (two)", [stack.client, b], runs, deadline, pids)
        result.failures += failures
    except (TimeoutError, grpc.aio.AioRpcError) as exc:
        result.failures.append(f"engines: the second engine: {exc!r}\n{second.log_tail(20)}")
        return result
    finally:
        await b.close()
        second.stop()
    for label, figures in (("one", one), ("two", two)):
        for key in ("runs_per_s", "completed", "events_per_s"):
            result.figures[f"{label}_{key}"] = figures[key]
        for key, value in figures.items():
            if key.startswith("cpu_ms_"):
                result.figures[f"{label}_{key}"] = value
    result.figures["two_over_one"] = two["runs_per_s"] / one["runs_per_s"]
    return result


async def settle(client: Client, seconds: float = 120.0) -> None:
    """Waits until the step queue is empty, then for the steps still running to end: what a
    cancelled round left behind must not weigh on the next one."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        queue = await client.queue.GetStepQueue(sq.GetStepQueueRequest(), timeout=10)
        if not any(depth.ready for depth in queue.total):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)


async def cancel_all(client: Client, execution_ids: list[str]) -> None:
    async def cancel(execution_id: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await client.executions.CancelExecution(
                es.CancelExecutionRequest(execution_id=execution_id, reason="bench deadline"),
                timeout=30,
            )

    await asyncio.gather(*(cancel(e) for e in execution_ids))


def fsyncs_per_second(directory: Path, seconds: float = 1.0) -> float:
    """What the disk under the database gives: small appends each followed by fsync. Where
    this is fast (a VM's write cache), fsync at commit costs the database little."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        began = time.perf_counter()
        done = 0
        while time.perf_counter() - began < seconds:
            os.write(fd, b"x" * 200)
            os.fsync(fd)
            done += 1
        return done / (time.perf_counter() - began)
    finally:
        os.close(fd)
        path.unlink()


async def storage(uri: str, directory: Path, singles: int, batches: int, seconds: float) -> Round:
    """What the database server allows: durable inserts one at a time, and in batches of
    100, each for at most `seconds` (an fsyncing server may take 100 ms a commit)."""
    result = Round()
    result.figures["disk_fsyncs_per_s"] = fsyncs_per_second(directory)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    batch_size = 100
    try:
        database = client.get_database(
            "bench_storage", write_concern=WriteConcern(w="majority", j=True)
        )
        collection = database[f"events_{time.monotonic_ns()}"]
        await collection.insert_one({"warm": True})
        began = time.perf_counter()
        done = 0
        while done < singles and time.perf_counter() - began < seconds:
            await collection.insert_one({"execution_id": "x", "seq": done, "data": {"p": done}})
            done += 1
        result.figures["single_inserts_per_s"] = done / (time.perf_counter() - began)
        began = time.perf_counter()
        done = 0
        while done < batches and time.perf_counter() - began < seconds:
            await collection.insert_many(
                [
                    {"execution_id": "y", "seq": done * batch_size + i, "data": {"p": i}}
                    for i in range(batch_size)
                ]
            )
            done += 1
        result.figures["batched_inserts_per_s"] = done * batch_size / (time.perf_counter() - began)
        await database.drop_collection(collection.name)
    finally:
        await client.close()
    return result


async def fanout(
    stack: Stack, sockets: int, processes: int, reports: int, interval: float
) -> Round:
    """One run watched by `sockets` WebSockets on one gateway, opened by `processes` client
    processes (bench/ws_clients.py) so that one client interpreter does not set the figure."""
    assert stack.client is not None and stack.gateway is not None
    assert stack.gateway.process is not None
    client = stack.client
    result = Round()
    step = {"handler": "fanout", "heartbeat_timeout_seconds": 60}
    workflow = await client.create_workflow("bench-fanout", {"name": "fanout", **step})
    execution = await client.start(workflow.workflow_id, {"interval": interval, "seconds": 300})
    # A fresh gateway each round: memory freed by the last round's sockets stays in the
    # process's heap and would hide what the new sockets cost.
    await stack.restart_gateway()
    assert stack.gateway.process is not None
    gateway_pid = stack.gateway.process.pid
    url = f"{stack.gateway_url.replace('http', 'ws')}/ws/{execution.execution_id}"
    rss_before = rss_bytes(gateway_pid)
    shares = [sockets // processes + (i < sockets % processes) for i in range(processes)]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ws_clients",
            url,
            str(share),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # The arrivals come back as one JSON line of a few hundred KiB.
            limit=64 * 1024 * 1024,
            env={**os.environ, **ROOT_ENV, "BENCH_TOKEN": token()},
        )
        for share in shares
    ]
    try:
        opened = 0
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            ready = json.loads(line or b"{}")
            opened += int(ready.get("open", 0))
        await asyncio.sleep(0.5)  # the last joiners' snapshots are sent
        rss_after = rss_bytes(gateway_pid)
        cpu_pids = {"gateway": gateway_pid, **{f"client{i}": c.pid for i, c in enumerate(children)}}
        cpu_before = {name: cpu_seconds(pid) for name, pid in cpu_pids.items()}
        measure_from = time.time()
        await asyncio.sleep(reports * interval + 1.0)
        # Reports sent in the last second may still be on their way to some sockets.
        measure_to = time.time() - 1.0
        cpu_after = {name: cpu_seconds(pid) for name, pid in cpu_pids.items()}
        arrivals: dict[int, list[float]] = {}
        sent: dict[int, float] = {}
        for child in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(b"stop\n")
            await child.stdin.drain()
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            report = json.loads(line)
            for n, (sent_at, times) in report["arrivals"].items():
                if measure_from <= sent_at <= measure_to:
                    sent[int(n)] = sent_at
                    arrivals.setdefault(int(n), []).extend(times)
    finally:
        for child in children:
            if child.returncode is None and child.stdin is not None:
                with contextlib.suppress(ConnectionError):
                    child.stdin.close()
            await asyncio.wait_for(child.wait(), 30)
        await client.executions.CancelExecution(
            es.CancelExecutionRequest(execution_id=execution.execution_id, reason="bench done"),
            timeout=10,
        )
    window = measure_to - measure_from
    result.figures["gateway_cpu_share"] = (cpu_after["gateway"] - cpu_before["gateway"]) / window
    result.figures["clients_cpu_share"] = (
        sum(cpu_after[name] - cpu_before[name] for name in cpu_pids if name != "gateway") / window
    )
    to_last = [(max(times) - sent[n]) * 1000 for n, times in arrivals.items() if times]
    every = [(t - sent[n]) * 1000 for n, times in arrivals.items() for t in times]
    missing = sum(opened - len(times) for times in arrivals.values())
    result.figures.update(
        sockets=opened,
        reports=len(to_last),
        to_last_p50_ms=quantile(to_last, 0.5) if to_last else float("nan"),
        to_last_p99_ms=quantile(to_last, 0.99) if to_last else float("nan"),
        any_socket_p50_ms=quantile(every, 0.5) if every else float("nan"),
        rss_per_socket_kib=(rss_after - rss_before) / max(opened, 1) / 1024,
        missed_deliveries=missing,
    )
    result.samples["fanout_to_last_ms"] = to_last
    if opened < sockets:
        result.failures.append(f"fan-out: only {opened} of {sockets} sockets opened")
    if not to_last:
        result.failures.append("fan-out: no progress report reached the sockets")
    if missing:
        result.failures.append(f"fan-out: {missing} deliveries of a report to a socket missing")
    return result


# --- soak: three tenants, one abusive -------------------------------------------------

# Offered by no runner but this process, which takes the step and reports for it.
REPLICA_HANDLER = "bench-replica-watch"


async def replica_watch(stack: Stack, reports: int, interval: float) -> Round:
    """Cross-replica watch latency: a second engine (B) on the stack's database; this process
    takes a step of a run that engine A (the stack's) holds, and reports progress to A,
    `reports` times, `interval` seconds apart. One watcher on B and one on A (the baseline:
    A publishes in-process, B learns through its change feed) note when each report's event
    arrives. Figures, on this process's clock: report acknowledged by A -> event received
    (below zero when the event overtakes A's reply), and report sent -> event received."""
    assert stack.client is not None and stack.engine is not None
    a = stack.client
    result = Round()
    replica, b = another_engine(stack, "replica")
    watchers: list[asyncio.Task[None]] = []
    try:
        await wait_serving(b.target)
        queue = sq_grpc.StepQueueServiceStub(a.runner_channel)

        async def poll(wait_seconds: float) -> sq.PollStepAttemptsResponse:
            reply: sq.PollStepAttemptsResponse = await queue.PollStepAttempts(
                sq.PollStepAttemptsRequest(
                    runner_id="bench-replica-runner",
                    handlers=[REPLICA_HANDLER],
                    max_attempts=1,
                    wait_seconds=wait_seconds,
                ),
                timeout=wait_seconds + 5,
            )
            return reply

        await poll(0.1)  # a workflow may name only a handler some runner offers
        step = {"handler": REPLICA_HANDLER, "heartbeat_timeout_seconds": 60}
        workflow = await a.create_workflow("bench-replica-watch", {"name": "report", **step})
        execution = await a.start(workflow.workflow_id)
        execution_id = execution.execution_id
        polled = await poll(10)
        task = polled.tasks[0]
        head = (await a.get(execution_id)).last_seq
        arrivals: dict[str, dict[int, float]] = {"a": {}, "b": {}}
        live = {"a": asyncio.Event(), "b": asyncio.Event()}

        async def watch(name: str, client: Client) -> None:
            # From one before the head: its arrival says the watcher follows live.
            async for item in client.watch(execution_id, head - 1):
                event = item.event
                if event.seq == head:
                    live[name].set()
                if event.type == ex_pb.EVENT_TYPE_STEP_PROGRESS:
                    n = int(as_dict(event.data)["progress"]["custom_data"]["n"])
                    arrivals[name][n] = time.monotonic()
                if event.type in TERMINAL_EVENTS:
                    return

        watchers = [
            asyncio.create_task(watch("a", a)),
            asyncio.create_task(watch("b", b)),
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in live.values())), 30)
        acknowledged: dict[int, float] = {}
        sent: dict[int, float] = {}
        for n in range(1, reports + 1):
            sent[n] = time.monotonic()
            await a.reports.ReportStepProgress(
                sr.ReportStepProgressRequest(
                    execution_id=execution_id,
                    step_name=task.step_name,
                    attempt_token=task.attempt_token,
                    progress=ex_pb.StepProgress(
                        percentage=100.0 * n / reports, custom_data=struct({"n": n})
                    ),
                ),
                timeout=10,
            )
            acknowledged[n] = time.monotonic()
            await asyncio.sleep(interval)
        await a.reports.CompleteStep(
            sr.CompleteStepRequest(
                execution_id=execution_id,
                step_name=task.step_name,
                attempt_token=task.attempt_token,
                success=True,
            ),
            timeout=10,
        )
        await asyncio.wait_for(asyncio.gather(*watchers), 30)
        for name, label in (("b", "replica"), ("a", "same_engine")):
            got = arrivals[name]
            for since, key in ((acknowledged, label), (sent, f"{label}_from_sent")):
                samples = [(got[n] - since[n]) * 1000 for n in since if n in got]
                result.samples[f"{key}_ms"] = samples
                for q in (50, 99):
                    result.figures[f"{key}_p{q}_ms"] = quantile(samples, q / 100)
            if len(got) < reports:
                result.failures.append(
                    f"replica: the watcher on {'B' if name == 'b' else 'A'} saw {len(got)} "
                    f"of {reports} progress events"
                )
        result.figures["reports"] = reports
    except (TimeoutError, grpc.aio.AioRpcError, IndexError) as exc:
        result.failures.append(f"replica: {exc!r}\n{replica.log_tail(20)}")
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await b.close()
        replica.stop()
    return result


SOAK_GOOD_TENANTS = ("soak-good-1", "soak-good-2")
SOAK_ABUSER = "soak-abuser"
SOAK_INPUT_BYTES = 1024 * 1024
# The abuser's concurrent loops: starts of ~1 MiB, sync executes held, progress floods.
SOAK_START_LOOPS = 2
SOAK_SYNC_HOLDERS = 30
SOAK_FLOODS = 2
SOAK_FLOOD_INTERVAL = 0.02
SOAK_MAX_STREAMS = 200
SOAK_ABUSES = ("starts", "streams", "syncs", "floods")


@dataclass
class Abuse:
    """What the abuser got and was refused, by the code of each refusal."""

    accepted: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    streams: list[Any] = field(default_factory=list)

    def count(self, what: str, status: int, body: Any) -> float:
        """Records an answer; the seconds the abuser waits before the next try (it goes
        exactly as fast as it is let: Retry-After on a 429, at once otherwise)."""
        if status < 400:
            self.accepted[what] = self.accepted.get(what, 0) + 1
            return 0.0
        code = body.get("error", {}).get("code", str(status)) if isinstance(body, dict) else ""
        details = body.get("error", {}).get("details", {}) if isinstance(body, dict) else {}
        key = f"{what}:{code}" + (f":{details['quota']}" if "quota" in details else "")
        self.refused[key] = self.refused.get(key, 0) + 1
        if status >= 500 and len(self.errors) < 5:
            self.errors.append(f"{what}: {status} {str(body)[:200]}")
        return 1.0 if status != 429 else -1.0


async def good_tenant(
    client: Client, workflow_id: str, until: float, samples: list[float], failures: list[str]
) -> None:
    """Ordinary 5-step runs one after another, each timed from start to its terminal event."""
    while time.monotonic() < until:
        began = time.monotonic()
        try:
            execution = await client.start(workflow_id)
        except grpc.aio.AioRpcError as exc:
            failures.append(
                f"soak: a good tenant's start failed: {exc.code().name} {exc.details()}"
            )
            await asyncio.sleep(0.5)
            continue
        seen = await watch_to_end(client, execution.execution_id, 60)
        if seen.status != ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED:
            failures.append(f"soak: good run {execution.execution_id} {seen.error or 'failed'}")
            continue
        samples.append((seen.ended - began) * 1000)


async def abuser(
    stack: Stack, until: float, abuse: Abuse, kinds: tuple[str, ...] = SOAK_ABUSES
) -> None:
    """Through the gateway, with its tenant's token: manual starts of ~1 MiB, WebSockets on
    each execution it got, sync executes held to the gateway's bound, and steps that report
    progress as fast as they can; each refusal is retried as soon as Retry-After says."""
    import aiohttp

    assert stack.client is not None
    admin = Client(stack.client.target, token(tenant=SOAK_ABUSER))
    manual = await admin.create_workflow("abuse", {"name": "e", "handler": "progress3"})
    flood = await admin.create_workflow(
        "flood", {"name": "flood", "handler": "fanout", "heartbeat_timeout_seconds": 60}
    )
    await admin.close()
    base = stack.gateway_url
    big = json.dumps(
        {
            "workflow_id": manual.workflow_id,
            "data": {"manual": True, "base64": "QUJD" * (SOAK_INPUT_BYTES // 4)},
        }
    ).encode()
    small = json.dumps({"workflow_id": manual.workflow_id, "data": {"manual": True}}).encode()
    executions: asyncio.Queue[str] = asyncio.Queue()
    headers = {"Authorization": f"Bearer {token(tenant=SOAK_ABUSER)}"}
    timeout = aiohttp.ClientTimeout(total=120)

    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:

        async def post(what: str, path: str, body: bytes) -> tuple[float, Any]:
            try:
                async with http.post(
                    base + path, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    answer = await response.json(content_type=None)
                    wait = abuse.count(what, response.status, answer)
                    if wait < 0:
                        wait = float(response.headers.get("Retry-After", "1"))
                    return wait, answer
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                abuse.count(what, 599, {"error": {"code": type(exc).__name__}})
                return 1.0, None

        async def starts() -> None:
            while time.monotonic() < until:
                wait, answer = await post("start", "/execute-async/", big)
                if isinstance(answer, dict) and "execution_id" in answer:
                    executions.put_nowait(answer["execution_id"])
                await asyncio.sleep(min(wait, max(until - time.monotonic(), 0)))

        async def streams() -> None:
            while time.monotonic() < until and len(abuse.streams) < SOAK_MAX_STREAMS:
                try:
                    execution_id = await asyncio.wait_for(executions.get(), 1.0)
                except TimeoutError:
                    continue
                url = f"{base.replace('http', 'ws', 1)}/ws/{execution_id}"
                try:
                    ws = await http.ws_connect(url)
                except aiohttp.WSServerHandshakeError as exc:
                    abuse.count("stream", exc.status, {"error": {"code": str(exc.status)}})
                    retry = exc.headers.get("Retry-After", "1") if exc.headers else "1"
                    executions.put_nowait(execution_id)
                    await asyncio.sleep(min(float(retry), max(until - time.monotonic(), 0)))
                    continue
                abuse.count("stream", 101, None)
                abuse.streams.append(ws)

        async def syncs() -> None:
            while time.monotonic() < until:
                wait, _ = await post("sync", "/execute/", small)
                await asyncio.sleep(min(wait, max(until - time.monotonic(), 0)))

        async def floods() -> None:
            body = json.dumps(
                {
                    "workflow_id": flood.workflow_id,
                    "data": {"interval": SOAK_FLOOD_INTERVAL, "seconds": until - time.monotonic()},
                }
            ).encode()
            await post("flood", "/execute-async/", body)

        loops = [
            *(starts() for _ in range(SOAK_START_LOOPS if "starts" in kinds else 0)),
            *([streams()] if "streams" in kinds else []),
            *(syncs() for _ in range(SOAK_SYNC_HOLDERS if "syncs" in kinds else 0)),
            *(floods() for _ in range(SOAK_FLOODS if "floods" in kinds else 0)),
        ]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            # The phase ends at `until`: calls still held then (sync executes) are dropped.
            await asyncio.wait(tasks, timeout=max(until - time.monotonic(), 0))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(ws.close() for ws in abuse.streams), return_exceptions=True)


async def soak(stack: Stack, seconds: float, kinds: tuple[str, ...] = SOAK_ABUSES) -> Round:
    """Two tenants run ordinary 5-step workflows alone for `seconds` / 2, then for `seconds`
    while a third tenant abuses the gateway and the engine (see `abuser`), then alone again
    for `seconds` / 2: their start->end latency alone and beside the abuser, and the ratio.
    Alone is measured on both sides because the runs slow down as the database fills (p50
    +25 % over 45 s alone, measured): one side only would give that drift to the abuser."""
    assert stack.client is not None
    result = Round()
    clients = [Client(stack.client.target, token(tenant=t)) for t in SOAK_GOOD_TENANTS]
    try:
        workflows = [await progress_workflow(c) for c in clients]
        for c, w in zip(clients, workflows, strict=True):  # warm-up, not measured
            await good_tenant(c, w, time.monotonic() + 2, [], result.failures)
        samples: dict[str, list[float]] = {"alone": [], "abused": []}
        busy: dict[str, dict[str, float]] = {"alone": {}, "abused": {}}
        spent = {"alone": 0.0, "abused": 0.0}
        abuse = Abuse()
        for phase, share in (("alone", 0.5), ("abused", 1.0), ("alone", 0.5)):
            until = time.monotonic() + seconds * share
            work = [
                good_tenant(c, w, until, samples[phase], result.failures)
                for c, w in zip(clients, workflows, strict=True)
            ]
            if phase == "abused":
                work.append(abuser(stack, until, abuse, kinds))
            before, began = stack.cpu(), time.monotonic()
            await asyncio.gather(*work)
            after = stack.cpu()
            spent[phase] += time.monotonic() - began
            for name in before:
                busy[phase][name] = busy[phase].get(name, 0.0) + after[name] - before[name]
        for phase, taken in samples.items():
            if not taken:
                result.failures.append(f"soak: no good run completed {phase}")
                return result
            result.samples[f"soak_{phase}_ms"] = taken
            result.figures[f"{phase}_runs"] = len(taken)
            for q in (50, 99):
                result.figures[f"{phase}_p{q}_ms"] = quantile(taken, q / 100)
            for name, cpu in busy[phase].items():  # cores each process kept busy
                result.figures[f"{phase}_cores_{name}"] = cpu / spent[phase]
        for q in (50, 99):
            result.figures[f"p{q}_ratio"] = (
                result.figures[f"abused_p{q}_ms"] / result.figures[f"alone_p{q}_ms"]
            )
        result.figures["abuser_accepted"] = sum(abuse.accepted.values())
        result.figures["abuser_refused"] = sum(abuse.refused.values())
        result.figures["abuser_streams"] = len(abuse.streams)
        result.notes.append(
            "soak abuser: accepted "
            + ", ".join(f"{k} {v}" for k, v in sorted(abuse.accepted.items()))
            + "; refused "
            + ", ".join(f"{k} {v}" for k, v in sorted(abuse.refused.items()))
        )
        result.failures += [f"soak: the abuser got a server error: {e}" for e in abuse.errors]
    finally:
        for c in clients:
            await c.close()
    return result


# What the search scenario asks, by name: ListExecutions' filters (`hour_ago` filled in).
SEARCHES: dict[str, dict[str, Any]] = {
    "newest": {},
    "failed": {"statuses": [ex_pb.EXECUTION_STATUS_FAILED]},
    "failed_last_hour": {"statuses": [ex_pb.EXECUTION_STATUS_FAILED], "created_after": None},
    "one_workflow": {"workflow_id": "bench-search-wf-3"},
    "name": {"workflow_name_contains": "Invoices 7"},
}
SEARCH_WORKFLOWS = 10
SEARCH_DAYS = 30


async def search(stack: Stack, executions: int, queries: int) -> Round:
    """Finding executions among `executions` ended ones of one tenant (spread over 30 days,
    10 workflows; 80 % completed, 15 % failed, 5 % cancelled): ListExecutions' time for a page
    of 20, for each shape in SEARCHES, `queries` calls each. The executions are copies of one
    real run's status document, written to the database directly (the API would take an hour
    for 100,000), once per stack."""
    result = Round()
    assert stack.client is not None
    client = stack.client
    workflow_id = await progress_workflow(client)
    started = await client.start(workflow_id, {"bench": "search"}, deadline_seconds=60)
    final = await client.wait_terminal(started.execution_id, 120)
    if final.status != ex_pb.EXECUTION_STATUS_COMPLETED:
        result.failures.append(f"search: the model run ended {final.status}")
        return result
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.uri, tz_aware=True)
    try:
        executions_of = mongo["discovery_bench"]["executions"]
        model = await executions_of.find_one({"_id": started.execution_id})
        assert model is not None
        have = await executions_of.count_documents({"bench_search": True})
        began = time.perf_counter()
        await _copies(executions_of, model, range(have, executions))
        if executions > have:
            result.figures["search_insert_docs_per_s"] = (executions - have) / (
                time.perf_counter() - began
            )
    finally:
        await mongo.close()
    hour_ago = ex_pb.Execution().create_time
    hour_ago.FromSeconds(int(time.time()) - 3600)
    for name, filters in SEARCHES.items():
        request = es.ListExecutionsRequest(
            page_size=20, **{k: v for k, v in filters.items() if k != "created_after"}
        )
        if "created_after" in filters:
            request.created_after.CopyFrom(hour_ago)
        took: list[float] = []
        found = 0
        for _ in range(queries):
            began = time.perf_counter()
            response = await client.executions.ListExecutions(request, timeout=60)
            took.append((time.perf_counter() - began) * 1000)
            found = len(response.executions)
        result.figures[f"search_{name}_p50_ms"] = quantile(took, 0.5)
        result.figures[f"search_{name}_p99_ms"] = quantile(took, 0.99)
        if found == 0:
            result.failures.append(f"search: {name} found nothing among {executions}")
    return result


async def _copies(
    collection: Any, model: dict[str, Any], numbers: range, batch: int = 1000
) -> None:
    """Copies of `model` numbered `numbers`: ended, each of one of SEARCH_WORKFLOWS
    workflows, created at a random-looking moment of the last SEARCH_DAYS days."""
    now = model["created_at"]
    spread = SEARCH_DAYS * 86400
    for first in range(numbers.start, numbers.stop, batch):
        docs = []
        for n in range(first, min(first + batch, numbers.stop)):
            status = "failed" if n % 20 < 3 else "cancelled" if n % 20 == 3 else "completed"
            k = n % SEARCH_WORKFLOWS
            workflow = {**model["workflow"], "name": f"Invoices {k}"}
            created = now - timedelta(seconds=(n * 7919) % spread)
            doc = {**model, "_id": f"bench-search-{n}", "status": status, "bench_search": True}
            doc.update(workflow=workflow, workflow_id=f"bench-search-wf-{k}", created_at=created)
            doc.pop("request_id", None)
            docs.append(doc)
        await collection.insert_many(docs, ordered=False)
