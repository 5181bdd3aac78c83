"""Engine throughput against the raw database, measured in the same run.

    PYTHONPATH=.:generated .venv/bin/python -m tests.benchmarks.bench_engine [executions]

Every service runs in its own process, as in production: the database (`secantusd-py`, on
disk), the engine and pioneer; this process is only the client.

Baseline: single `insert_one` calls to the same server, one after another: what an engine
that wrote each event on its own could commit at best. Then the engine: N executions of a
two-step workflow started concurrently, each step reporting progress several times a second.
Not collected by pytest: it prints figures, it does not pass or fail.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from services.engine.store.embedded import mongo_uri
from tests.stack import (
    Client,
    EngineProcess,
    PioneerProcess,
    free_port,
    wait_for_handlers,
    wait_serving,
)


async def baseline(uri: str, writes: int) -> float:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    collection = client.get_database("baseline", write_concern=WriteConcern(w="majority", j=True))[
        "events"
    ]
    await collection.insert_one({"warm": True})
    began = time.perf_counter()
    for i in range(writes):
        await collection.insert_one({"execution_id": "x", "seq": i, "data": {"p": i}})
    rate = writes / (time.perf_counter() - began)
    await client.close()
    return rate


def services_env(uri: str, engine_port: int, pioneer_port: int) -> dict[str, str]:
    """The environment of an engine and a pioneer that find each other and the database."""
    return {
        "MONGODB_URI": uri,
        "ENGINE_PORT": str(engine_port),
        "PIONEER_PORT": str(pioneer_port),
        "DISCOVERY_URL": f"127.0.0.1:{engine_port}",
    }


async def engine_run(uri: str, executions: int, workdir: Path) -> None:
    engine_port, pioneer_port = free_port(), free_port()
    env = {
        **services_env(uri, engine_port, pioneer_port),
        "PIONEER_MAX_CONCURRENT_STEPS": str(executions),
        # The engine's own throughput, not the per-tenant start limit, is measured here.
        "ENGINE_START_RATE": "1000000",
        "ENGINE_START_BURST": str(executions),
    }
    pioneer = PioneerProcess(env, workdir / "pioneer.log")
    engine = EngineProcess(env, workdir / "engine.log")
    pioneer.start()
    engine.start()
    c = Client(f"127.0.0.1:{engine_port}")
    try:
        await wait_serving(c.target)
        await wait_for_handlers(c, {"sleep"})
        step = {"handler": "sleep", "heartbeat_timeout_seconds": 30}
        workflow = await c.create_workflow("bench", {"name": "a", **step}, {"name": "b", **step})
        began = time.perf_counter()
        started = await asyncio.gather(
            *(c.start(workflow.workflow_id, {"seconds": 1.0}) for _ in range(executions))
        )
        start_seconds = time.perf_counter() - began
        finals = [await c.wait_terminal(s.execution_id, 600) for s in started]
        total_seconds = time.perf_counter() - began
        events = sum(f.last_seq for f in finals)
        print(
            f"engine:   {executions} executions started in {start_seconds:.2f} s "
            f"({executions / start_seconds:.0f} starts/s)"
        )
        print(
            f"engine:   all finished in {total_seconds:.2f} s (2 s of steps each); "
            f"{events} events committed, {events / total_seconds:.0f} events/s"
        )
    finally:
        await c.close()
        engine.stop()
        pioneer.stop()


def start_database(path: str, port: int) -> subprocess.Popen[bytes]:
    # cwd: secantusd-py silently reads a ./secantusd.toml; an empty folder has none.
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("secantusd-py")),
            *("--storage-path", f"{path}/db", "--port", str(port)),
            *("--log-level", "WARNING"),
        ],
        cwd=path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def main(executions: int) -> None:
    with tempfile.TemporaryDirectory() as path:
        port = free_port()
        database = start_database(path, port)
        try:
            await asyncio.sleep(1.5)
            uri = mongo_uri(f"mongodb://127.0.0.1:{port}/")
            rate = await baseline(uri, 500)
            print(f"baseline: {rate:.0f} single inserts/s, one at a time, on the same server")
            await engine_run(uri, executions, Path(path))
        finally:
            database.terminate()
            database.wait(30)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
