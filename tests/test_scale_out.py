"""The cluster as users run it: 3 engines, 2 pioneers and 2 gateways, each its own process, on
one database. Runs start through both gateways, WebSocket clients of both follow them, and one
engine and one pioneer are SIGKILLed mid-run: every run completes, every watcher sees every
event once and in order, the dead engine's runs are taken over within one lease period, and no
client or runner is ever told NOT_OWNER."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from pymongo import AsyncMongoClient

from services.gateway.legacy import event_name
from tests.stack import (
    Client,
    EngineProcess,
    GatewayProcess,
    PioneerProcess,
    ServiceProcess,
    engine_process_env,
    free_port,
    step_successes,
    token,
    wait_for_handlers,
    wait_http,
    wait_serving,
)

RUNS = 200
WATCHERS = 300
# Long enough that a commit slowed by this load on two cores never lets a live engine's lease
# run out (the engine warns when a commit takes a third of it).
LEASE_SECONDS = 10.0
STEP = {
    "handler": "sleep",
    "heartbeat_timeout_seconds": 2,
    # A step the killed pioneer held is run again elsewhere: a second attempt, never a failure.
    "retry": {"max_attempts": 4, "initial_backoff_seconds": 0.1},
}
# Each of the three steps sleeps this long and reports progress twice on the way.
STEP_SECONDS = 0.5


@dataclass
class Cluster:
    engines: list[EngineProcess]
    engine_targets: list[str]
    pioneers: list[PioneerProcess]
    gateways: list[str]
    processes: list[ServiceProcess]

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log_tail(30)}" for p in self.processes)


@contextlib.asynccontextmanager
async def cluster(uri: str, database: str, logs: Path) -> AsyncIterator[Cluster]:
    engine_ports = [free_port() for _ in range(3)]
    targets = [f"127.0.0.1:{port}" for port in engine_ports]
    every_engine = ",".join(targets)
    engines = [
        EngineProcess(
            {
                **engine_process_env(uri, database, port),
                "ENGINE_LEASE_SECONDS": str(LEASE_SECONDS),
                "ENGINE_ADVERTISE_ADDRESS": target,
            },
            logs / f"engine-{i}.log",
        )
        for i, (port, target) in enumerate(zip(engine_ports, targets, strict=True), 1)
    ]
    pioneers = [
        PioneerProcess(
            {
                "PIONEER_PORT": str(free_port()),
                "DISCOVERY_URL": every_engine,
                "PIONEER_MAX_CONCURRENT_STEPS": "32",
            },
            logs / f"pioneer-{i}.log",
        )
        for i in (1, 2)
    ]
    gateway_ports = [free_port() for _ in range(2)]
    gateways = [
        GatewayProcess(
            {"GATEWAY_PORT": str(port), "ENGINE_URL": every_engine}, logs / f"gateway-{i}.log"
        )
        for i, port in enumerate(gateway_ports, 1)
    ]
    processes: list[ServiceProcess] = [*engines, *pioneers, *gateways]
    for process in processes:
        process.start()
    try:
        urls = [f"http://127.0.0.1:{port}" for port in gateway_ports]
        await asyncio.gather(
            *(wait_serving(target, 60) for target in targets),
            *(wait_http(f"{url}/health", 60) for url in urls),
        )
        yield Cluster(engines, targets, pioneers, urls, processes)
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))


async def watch(
    session: aiohttp.ClientSession,
    gateway: str,
    execution_id: str,
    after_seq: int | None,
    ended: set[str],
) -> tuple[list[dict[str, Any]], int | None]:
    """Every message a legacy WebSocket client receives, and how the server closed; the
    execution goes into `ended` once its terminal event came."""
    url = f"{gateway.replace('http', 'ws', 1)}/ws/{execution_id}"
    if after_seq is not None:
        url += f"?after_seq={after_seq}"
    messages: list[dict[str, Any]] = []
    async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            messages.append(json.loads(message.data))
            if messages[-1]["event"] == "workflow_completed":
                ended.add(execution_id)
        return messages, ws.close_code


async def start_run(session: aiohttp.ClientSession, gateway: str, workflow_id: str) -> str:
    async with session.post(
        f"{gateway}/workflows/{workflow_id}/execute-async", json={"seconds": STEP_SECONDS}
    ) as response:
        body = await response.json()
        assert response.status == 202, body
        return str(body["execution_id"])


async def create_workflow(session: aiohttp.ClientSession, gateway: str) -> str:
    definition = {
        "name": "scale-out",
        "steps": [{"name": name, **STEP} for name in ("first", "second", "third")],
    }
    async with session.post(f"{gateway}/workflows", json=definition) as response:
        body = await response.json()
        assert response.status == 201, body
        return str(body["workflow_id"])


async def takeover(db: Any, lease: dict[str, Any], killed_at: float) -> tuple[float, float]:
    """Seconds from the kill, and from the dead lease's expiry, until no unfinished run is
    held under it any more: another engine fenced the lease and claimed them."""
    expires_in = lease["expires_at"].replace(tzinfo=UTC).timestamp() - time.time()
    expiry = time.monotonic() + expires_in
    held = {"lease_owner": lease["_id"]}
    async with asyncio.timeout(60):
        while await db["executions"].count_documents(held):  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.1)
    now = time.monotonic()
    return now - killed_at, now - expiry


@pytest.mark.timeout(600)
async def test_a_cluster_finishes_every_run_and_every_watcher_sees_every_event_through_kills(
    own_database: str, database: str, tmp_path: Path
) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(own_database)
    db = mongo[database]
    headers = {"Authorization": f"Bearer {token()}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        cluster(own_database, database, tmp_path) as c,
        aiohttp.ClientSession(headers=headers, connector=connector) as session,
    ):
        clients = [Client(target) for target in c.engine_targets]
        try:
            # Each pioneer polls every engine; a workflow is accepted once its handler is
            # offered to the engine that receives it.
            await asyncio.gather(*(wait_for_handlers(x, {"sleep"}, 60) for x in clients))
            workflow_id = await create_workflow(session, c.gateways[0])

            ids = await asyncio.gather(
                *(start_run(session, c.gateways[i % 2], workflow_id) for i in range(RUNS))
            )
            # 300 watchers: one on each run through one gateway, a second on a hundred runs
            # through the other. Half replay from seq 0, half begin with a snapshot.
            plan = [(i % 2, ids[i], 0 if i % 4 < 2 else None) for i in range(RUNS)]
            plan += [(1 - i % 2, ids[i], None if i % 4 < 2 else 0) for i in range(WATCHERS - RUNS)]
            ended: set[str] = set()
            watchers = [
                asyncio.create_task(watch(session, c.gateways[g], i, after, ended))
                for g, i, after in plan
            ]

            # Mid-run: a sixth of the runs done, most of the rest in flight or queued. (The
            # watchers tell: polling the database would load it more than the cluster does.)
            async with asyncio.timeout(120):
                while len(ended) < RUNS // 6:  # noqa: ASYNC110 - the watchers set no event
                    await asyncio.sleep(0.05)
            # The engine that holds the most unfinished runs.
            owners = await db["executions"].aggregate(
                [
                    {"$match": {"lease_owner": {"$gt": ""}}},
                    {"$group": {"_id": "$lease_owner", "held": {"$sum": 1}}},
                    {"$sort": {"held": -1}},
                ]
            )
            busiest = (await owners.to_list())[0]
            lease = await db["engine_leases"].find_one({"_id": busiest["_id"]})
            assert lease is not None
            held = busiest["held"]
            victim = next(e for e in c.engines if e.env["ENGINE_ID"] == lease["engine_id"])
            target = victim.env["ENGINE_ADVERTISE_ADDRESS"]
            killed_at = time.monotonic()
            await asyncio.gather(
                asyncio.to_thread(victim.kill), asyncio.to_thread(c.pioneers[0].kill)
            )
            since_kill, since_expiry = await takeover(db, lease, killed_at)

            survivor = next(x for x, e in zip(clients, c.engines, strict=True) if e is not victim)
            finals = await asyncio.gather(*(survivor.wait_terminal(i, 240) for i in ids))
            seen = await asyncio.wait_for(asyncio.gather(*watchers), 120)
            logs = {i: await survivor.events(i) for i in ids}
            fenced = await db["engine_leases"].distinct("_id", {"fenced_at": {"$ne": None}})
        finally:
            for client in clients:
                await client.close()
            await mongo.close()

        outcomes = Counter(ex_pb.ExecutionStatus.Name(f.status) for f in finals)
        assert outcomes == {"EXECUTION_STATUS_COMPLETED": RUNS}, c.logs()
        for execution_id, events in logs.items():
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), execution_id
            assert step_successes(events) == {1: 1, 2: 1, 3: 1}, execution_id

        for (_, execution_id, after), (messages, close_code) in zip(plan, seen, strict=True):
            assert close_code == aiohttp.WSCloseCode.OK, (execution_id, messages[-3:])
            if after is None:
                snapshot, *messages = messages
                assert snapshot["event"] == "snapshot", snapshot
                after = snapshot["seq"]
            got = [(m["seq"], m["event"]) for m in messages]
            want = [(e.seq, event_name(e.type)) for e in logs[execution_id] if e.seq > after]
            assert got == want, execution_id

        # Nobody was ever told an execution is held elsewhere: not a watcher, not a runner
        # (its reports are forwarded), not a gateway (its calls likewise).
        for process in c.processes:
            text = process.log_path.read_text(errors="replace")
            assert "NOT_OWNER" not in text, process.log_path.name

        # Only the dead engine's lease was taken over: no live one was slow enough to lose it.
        assert fenced == [lease["_id"]], c.logs()
        assert since_expiry <= LEASE_SECONDS, (since_kill, since_expiry)
        print(
            f"\nscale-out: {RUNS} runs, {WATCHERS} watchers; killed {target} holding {held}"
            f" runs: taken over {since_kill:.2f} s after the kill,"
            f" {since_expiry:.2f} s after its lease expired (lease {LEASE_SECONDS:g} s)"
        )
