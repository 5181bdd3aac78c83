"""A burst bigger than the runners: this engine against an earlier one, in the same run.

    PYTHONPATH=.:generated .venv/bin/python -m tests.benchmarks.burst [runs] [slots] [baseline]

Defaults: 500 runs of a 5-step workflow started at once through the public gRPC API, one
pioneer with 8 step slots, against this checkout and against `baseline` (a git ref, default
a3b500f: the last engine that pushed steps to pioneer instead of queueing them), each on its
own database of one `secantusd-py` server, every service in its own process. The start rate
limit is lifted for both (ENGINE_START_RATE/BURST): the burst, not the limit, is measured.

Prints, for each: completed runs/s from the first start to the last terminal run, how many
completed, failed (and why) or were still running at the deadline, attempts beyond the first
(retries), and the longest wait in the step queue. Not collected by pytest: it prints figures.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es

from services.engine.store.embedded import DatabaseProcess
from tests.stack import ROOT, TERMINAL, Client, ServiceProcess, free_port, wait_serving

DEADLINE_SECONDS = 600.0
STEPS = 5
STEP_SECONDS = 0.05


@dataclass
class Figures:
    name: str
    runs: int
    seconds: float
    completed: int
    failed: int
    unfinished: int
    retries: int
    longest_wait: float | None
    reasons: Counter[str]


class TreeProcess(ServiceProcess):
    """`python -m <module>` from a given checkout of the project."""

    def __init__(self, module: str, root: Path, env: dict[str, str], log_path: Path) -> None:
        super().__init__({**env, "PYTHONPATH": f"{root}:{root / 'generated'}"}, log_path)
        self.module = module
        self.root = root

    def start(self) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=self.root,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=log,
            )


async def create_workflow(c: Client) -> str:
    """Retried until a runner has offered `sleep` (a pulling engine needs a poll first)."""
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 10}
    deadline = time.monotonic() + 60
    while True:
        try:
            workflow = await c.create_workflow(
                "burst", *({"name": f"step-{i}", **step} for i in range(STEPS))
            )
            return workflow.workflow_id
        except grpc.aio.AioRpcError as exc:
            if time.monotonic() > deadline or exc.code() not in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.UNAVAILABLE,
            ):
                raise
            await asyncio.sleep(0.2)


async def statuses(c: Client) -> list[ex_pb.Execution]:
    reply: es.ListExecutionsResponse = await c.executions.ListExecutions(
        es.ListExecutionsRequest(page_size=1000), timeout=60
    )
    return list(reply.executions)


async def burst(name: str, root: Path, uri: str, runs: int, slots: int, logs: Path) -> Figures:
    engine_port, pioneer_port = free_port(), free_port()
    env = {
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": name,
        "ENGINE_PORT": str(engine_port),
        "PIONEER_PORT": str(pioneer_port),
        "ENGINE_METRICS_PORT": "0",
        "PIONEER_METRICS_PORT": "0",
        # The earlier engine pushes to it; this one ignores it (runners pull).
        "PIONEER_URL": f"127.0.0.1:{pioneer_port}",
        "DISCOVERY_URL": f"127.0.0.1:{engine_port}",
        "PIONEER_MAX_CONCURRENT_STEPS": str(slots),
        "ENGINE_START_RATE": "1000000",
        "ENGINE_START_BURST": str(runs),
    }
    engine = TreeProcess("services.engine", root, env, logs / f"{name}-engine.log")
    pioneer = TreeProcess("services.pioneer", root, env, logs / f"{name}-pioneer.log")
    engine.start()
    pioneer.start()
    c = Client(f"127.0.0.1:{engine_port}")
    try:
        await wait_serving(c.target)
        workflow_id = await create_workflow(c)
        began = time.monotonic()
        await asyncio.gather(
            *(c.start(workflow_id, {"seconds": STEP_SECONDS}) for _ in range(runs))
        )
        while True:
            found = await statuses(c)
            done = [e for e in found if e.status in TERMINAL]
            if len(done) == runs or time.monotonic() - began > DEADLINE_SECONDS:
                break
            await asyncio.sleep(1.0)
        seconds = time.monotonic() - began
        # Listings leave the history out: each run is read whole once the clock has stopped.
        whole = [await c.get(e.execution_id) for e in found]
        attempts = [a for e in whole for a in e.steps_history]
        waits = [
            (a.start_time.ToDatetime() - a.queue_time.ToDatetime()).total_seconds()
            for a in attempts
            if a.HasField("queue_time") and a.HasField("start_time")
        ]
        return Figures(
            name=name,
            runs=runs,
            seconds=seconds,
            completed=sum(e.status == ex_pb.EXECUTION_STATUS_COMPLETED for e in found),
            failed=sum(e.status == ex_pb.EXECUTION_STATUS_FAILED for e in found),
            unfinished=runs - len(done),
            retries=sum(a.attempt > 1 for a in attempts),
            reasons=Counter(e.error.reason for e in whole if e.error.reason),
            longest_wait=max(waits) if waits else None,
        )
    finally:
        await c.close()
        engine.stop()
        pioneer.stop()


def checkout(ref: str, path: Path) -> Path:
    tree = path / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
        check=True,
        capture_output=True,
    )
    return tree


async def both(tree: Path, uri: str, runs: int, slots: int, logs: Path) -> list[Figures]:
    await asyncio.sleep(1.5)  # the database server starting
    return [
        await burst("baseline", tree, uri, runs, slots, logs),
        await burst("queue", ROOT, uri, runs, slots, logs),
    ]


def main(runs: int, slots: int, ref: str) -> None:
    with tempfile.TemporaryDirectory() as path:
        database = DatabaseProcess(Path(path))
        tree = checkout(ref, Path(path))
        try:
            uri = database.start()
            results = asyncio.run(both(tree, uri, runs, slots, Path(path)))
        finally:
            database.stop()
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
            )
    print(
        f"\n{runs} runs x {STEPS} steps started at once, one pioneer with {slots} slots "
        f"(baseline = {ref})"
    )
    print(
        f"{'engine':10} {'completed/s':>11} {'seconds':>8} {'completed':>9} {'failed':>6} "
        f"{'unfinished':>10} {'retries':>7} {'longest wait':>12}  failures"
    )
    for f in results:
        wait = f"{f.longest_wait:.1f} s" if f.longest_wait is not None else "-"
        print(
            f"{f.name:10} {f.completed / f.seconds:11.2f} {f.seconds:8.1f} {f.completed:9d} "
            f"{f.failed:6d} {f.unfinished:10d} {f.retries:7d} {wait:>12}  {dict(f.reasons)}"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 500,
        int(args[1]) if len(args) > 1 else 8,
        args[2] if len(args) > 2 else "a3b500f",
    )
