"""The soak: executions at a steady rate for many minutes, the engine's resources sampled.

    PYTHONPATH=.:generated .venv/bin/python -m tests.benchmarks.soak [minutes] [per_second]

Defaults: 15 minutes at 10 executions a second (../shared/RELIABILITY.md, scenario 37). The
database (`secantusd-py`), the engine and pioneer each run in their own process; every 15 s
the engine's RSS, open file descriptors and threads are read from /proc, and its database
connections from the server. After a 2-minute warm-up the RSS slope (least squares) must
stay under 1 MB/min and the fd count within ±5 of the warm-up's; the exit code says whether
they did. Too long for `make test`: it is run by hand or nightly.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from services.engine.store.embedded import DatabaseProcess
from tests.stack import (
    TERMINAL,
    Client,
    EngineProcess,
    PioneerProcess,
    free_port,
    wait_for_handlers,
    wait_serving,
)

SAMPLE_SECONDS = 15.0
WARM_UP_SECONDS = 120.0
MAX_RSS_SLOPE_MB_PER_MIN = 1.0
MAX_FD_DRIFT = 5


def proc_figures(pid: int) -> tuple[float, int, int]:
    """RSS in MB, open fds, threads of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mb, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


async def soak(uri: str, minutes: float, per_second: float, workdir: Path) -> bool:
    engine_port, pioneer_port = free_port(), free_port()
    env = {
        "MONGODB_URI": uri,
        "ENGINE_PORT": str(engine_port),
        "PIONEER_PORT": str(pioneer_port),
        "ENGINE_METRICS_PORT": "0",
        "PIONEER_METRICS_PORT": "0",
        "DISCOVERY_URL": f"127.0.0.1:{engine_port}",
    }
    pioneer = PioneerProcess(env, workdir / "pioneer.log")
    engine = EngineProcess(env, workdir / "engine.log")
    pioneer.start()
    engine.start()
    c = Client(f"127.0.0.1:{engine_port}")
    db: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        await wait_serving(c.target)
        await wait_for_handlers(c, {"sleep"})
        step = {"handler": "sleep", "heartbeat_timeout_seconds": 10}
        workflow = await c.create_workflow("soak", {"name": "a", **step}, {"name": "b", **step})
        assert engine.process is not None
        pid = engine.process.pid
        samples: list[tuple[float, float, int, int, int]] = []
        started: list[str] = []
        began = time.monotonic()
        next_sample = began
        while (now := time.monotonic()) - began < minutes * 60:
            if now >= next_sample:
                rss, fds, threads = proc_figures(pid)
                connections = (await db.admin.command("serverStatus"))["connections"]["current"]
                samples.append((now - began, rss, fds, threads, connections))
                print(
                    f"{(now - began) / 60:5.1f} min  rss {rss:7.1f} MB  fds {fds:4d}  "
                    f"threads {threads:3d}  db connections {connections:3d}  "
                    f"started {len(started)}",
                    flush=True,
                )
                next_sample += SAMPLE_SECONDS
            execution = await c.start(workflow.workflow_id, {"seconds": 0.5})
            started.append(execution.execution_id)
            await asyncio.sleep(max(0.0, began + len(started) / per_second - time.monotonic()))
        finals = [await c.wait_terminal(i, 120) for i in started[-50:]]
        assert all(f.status in TERMINAL for f in finals)
    finally:
        await db.close()
        await c.close()
        engine.stop()
        pioneer.stop()
    warm = [s for s in samples if s[0] >= WARM_UP_SECONDS]
    if len(warm) < 3:
        print("too short for a verdict: run it past the 2-minute warm-up")
        return False
    rss_slope = slope([(t / 60, rss) for t, rss, *_ in warm])
    fd_drift = max(abs(fds - warm[0][2]) for _, _, fds, *_ in warm)
    print(
        f"after the warm-up: RSS slope {rss_slope:+.2f} MB/min "
        f"(limit {MAX_RSS_SLOPE_MB_PER_MIN}), fd drift {fd_drift} (limit {MAX_FD_DRIFT}), "
        f"threads {warm[0][3]}→{warm[-1][3]}, db connections {warm[0][4]}→{warm[-1][4]}; "
        f"{len(started)} executions"
    )
    return rss_slope < MAX_RSS_SLOPE_MB_PER_MIN and fd_drift <= MAX_FD_DRIFT


async def main(minutes: float = 15.0, per_second: float = 10.0) -> int:
    with tempfile.TemporaryDirectory() as path:
        database = DatabaseProcess(Path(path))
        try:
            ok = await soak(await database.start_async(), minutes, per_second, Path(path))
        finally:
            database.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(
        asyncio.run(
            main(float(args[0]) if args else 15.0, float(args[1]) if len(args) > 1 else 10.0)
        )
    )
