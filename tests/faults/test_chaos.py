"""The chaos loop: while executions keep being started, SIGKILL the engine or pioneer (chosen
at random, seeded) every few seconds, and bring it back. At the end every acknowledged
execution is terminal, and its log holds the invariants (../shared/RELIABILITY.md, I1-I4).
Pioneer has fewer slots than the runs need (SLOTS), so the kills land while work waits in the
step queue: queued attempts must survive both kills and be handed out once.

`make test` runs a short loop. The full one (5 minutes, 300 executions, a kill every 5-15 s):
    DISCOVERY_CHAOS_SECONDS=300 DISCOVERY_CHAOS_EXECUTIONS=300 make test
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from pymongo import AsyncMongoClient

from tests.stack import (
    TERMINAL,
    Client,
    EngineProcess,
    PioneerProcess,
    ServiceProcess,
    engine_process_env,
    free_port,
    wait_for_runner,
    wait_serving,
)

SECONDS = float(os.environ.get("DISCOVERY_CHAOS_SECONDS", "40"))
EXECUTIONS = int(os.environ.get("DISCOVERY_CHAOS_EXECUTIONS", "60"))
SEED = int(os.environ.get("DISCOVERY_CHAOS_SEED", "20261126"))
# The full loop kills every 5-15 s; the short one more often, to fit as many kills in.
PAUSES = (5.0, 15.0) if SECONDS >= 120 else (3.0, 7.0)
SETTLE_SECONDS = 90.0
# About 4.5 steps run at once on average: three slots keep a backlog in the step queue.
SLOTS = 3
STEP = {"handler": "sleep", "heartbeat_timeout_seconds": 2, "retry": {"max_attempts": 6}}


@pytest.mark.timeout(SECONDS + SETTLE_SECONDS + 120)
async def test_kills_at_random_lose_and_duplicate_nothing(
    mongo_server: str, database: str, tmp_path: Path
) -> None:
    chance = random.Random(SEED)
    engine_port, pioneer_port = free_port(), free_port()
    engine = EngineProcess(
        engine_process_env(mongo_server, database, engine_port), tmp_path / "engine.log"
    )
    # Pioneer pulls its work from the engine: a restarted pioneer (a new runner_id) polls
    # again, a restarted engine is polled again after pioneer's backoff.
    pioneer = PioneerProcess(
        {
            "PIONEER_PORT": str(pioneer_port),
            "DISCOVERY_URL": f"127.0.0.1:{engine_port}",
            "PIONEER_MAX_CONCURRENT_STEPS": str(SLOTS),
        },
        tmp_path / "pioneer.log",
    )
    engine.start()
    client = Client(f"127.0.0.1:{engine_port}")
    try:
        await wait_serving(client.target)
        pioneer.start()
        await wait_for_runner(client.queue, pioneer.runner_id, explain=pioneer.log_tail)
        workflow = await client.create_workflow(
            "chaos", {"name": "a", **STEP}, {"name": "b", **STEP}, {"name": "c", **STEP}
        )
        acknowledged: dict[str, int] = {}  # execution id -> last seq it was acknowledged at
        starter = asyncio.create_task(
            _start_all(client, workflow.workflow_id, chance.random, acknowledged)
        )
        kills: Counter[str] = Counter()
        began = time.monotonic()
        while time.monotonic() - began < SECONDS:
            await asyncio.sleep(chance.uniform(*PAUSES))
            name, victim = chance.choice((("engine", engine), ("pioneer", pioneer)))
            await _kill_and_restart(victim, chance.uniform(0.2, 1.5))
            kills[name] += 1
        last_kill = time.monotonic()
        await asyncio.wait_for(starter, SETTLE_SECONDS)
        await wait_serving(client.target)
        finals = await asyncio.gather(
            *(client.wait_terminal(i, SETTLE_SECONDS) for i in acknowledged)
        )
        settled = time.monotonic() - last_kill
        outcomes = Counter(ex_pb.ExecutionStatus.Name(f.status) for f in finals)
        print(
            f"\nchaos: {SECONDS:g} s, {len(acknowledged)} executions, kills {dict(kills)}, "
            f"all terminal {settled:.1f} s after the last kill; {dict(outcomes)}"
        )
        assert len(acknowledged) == EXECUTIONS
        assert all(f.status in TERMINAL for f in finals)  # I1
        # Kills cost retries (six attempts a step), never a run: work waits, it never fails.
        assert outcomes == {"EXECUTION_STATUS_COMPLETED": EXECUTIONS}, outcomes
        await _check_logs(mongo_server, database, acknowledged, sum(kills.values()))
    finally:
        await client.close()
        engine.stop()
        pioneer.stop()


async def _start_all(
    client: Client, workflow_id: str, draw: Any, acknowledged: dict[str, int]
) -> None:
    """Starts EXECUTIONS over the loop; a start the engine did not answer is sent again with
    the same request_id, so it starts once whatever happened to the first try."""
    interval = SECONDS * 0.8 / EXECUTIONS
    for _ in range(EXECUTIONS):
        request_id = uuid.uuid4().hex
        document = {"seconds": 0.3 + draw() * 0.9}
        while True:
            try:
                started = await client.start(workflow_id, document, request_id=request_id)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ), exc
                await asyncio.sleep(0.2)
        acknowledged[started.execution_id] = started.last_seq
        await asyncio.sleep(interval)


async def _kill_and_restart(victim: ServiceProcess, down_seconds: float) -> None:
    await asyncio.to_thread(victim.kill)
    await asyncio.sleep(down_seconds)
    victim.start()


async def _check_logs(
    mongo_uri: str, database: str, acknowledged: dict[str, int], kills: int
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        events = client[database]["events"]
        for execution_id, seen_at in acknowledged.items():
            docs = await events.find({"execution_id": execution_id}).sort("seq", 1).to_list()
            seqs = [d["seq"] for d in docs]
            assert seqs == list(range(1, len(seqs) + 1)), "I2: gapless, no duplicates"
            assert seqs[-1] >= seen_at, "I5: nothing acknowledged is lost"
            types = [d["type"] for d in docs]
            ends = [t for t in types if t.startswith("workflow_") and t != "workflow_started"]
            assert ends == [types[-1]], "I3: one terminal event, and it is the last"
            finished = [d["data"] for d in docs if d["type"] == "step_finished"]
            successes = Counter(f["order"] for f in finished if f["status"] == "success")
            assert all(n == 1 for n in successes.values()), "I3: a step succeeds at most once"
            attempts: defaultdict[int, list[int]] = defaultdict(list)
            for d in docs:
                if d["type"] == "step_started":
                    attempts[d["data"]["order"]].append(d["data"]["attempt"])
            for numbers in attempts.values():
                assert numbers == sorted(set(numbers)), "I4: attempts strictly increase"
                assert len(numbers) <= 1 + kills, "I4: a new attempt only after a fault"
    finally:
        await client.close()
