"""The issue's test of schedules, as users run them: a schedule every minute, two engines (each
its own process) on one database, each SIGKILLed and started again in turn, and a pioneer
that runs the steps. In three minutes it fires three times, once per minute, never twice
for one minute, whichever engines are up:

- the first minute with both engines up (they race for it);
- the second with the first engine killed, the other alone;
- the third with the second killed and the first, restarted, alone: the schedule lives in the
  database, not in the engine that created it.

Real minutes: the test takes about three (quicker tests of firing move a schedule's next
time in the database: tests/engine/test_schedules.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import schedule_service_pb2 as ss
from discovery.engine.v1 import schedule_service_pb2_grpc as ss_grpc
from pymongo import AsyncMongoClient

from discovery_client.requests import struct
from tests.stack import (
    Client,
    EngineProcess,
    Pioneer,
    engine_process_env,
    free_port,
    wait_for_handlers,
    wait_serving,
)

NAP = {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
# How long after a minute's start its execution must exist: the engine wakes for the minute
# itself, so this is the time a start takes, with room for a loaded machine.
FIRE_SECONDS = 10.0


class Engines:
    def __init__(self, mongo_uri: str, database: str, logs: Path) -> None:
        ports = [free_port(), free_port()]
        self.targets = [f"127.0.0.1:{port}" for port in ports]
        self.processes = [
            EngineProcess(
                {
                    **engine_process_env(mongo_uri, database, port),
                    "ENGINE_ADVERTISE_ADDRESS": target,
                },
                logs / f"engine-{i}.log",
            )
            for i, (port, target) in enumerate(zip(ports, self.targets, strict=True), 1)
        ]
        self.clients = [Client(target) for target in self.targets]

    async def start(self, i: int) -> None:
        self.processes[i].start()
        await wait_serving(self.targets[i], 60)

    def kill(self, i: int) -> None:
        self.processes[i].kill()

    def log_lines(self, i: int) -> list[dict[str, Any]]:
        lines = []
        for line in self.processes[i].log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def started_by(self, i: int, schedule_id: str) -> set[str]:
        """The times engine `i` logged starting for the schedule."""
        return {
            line["scheduled_time"]
            for line in self.log_lines(i)
            if line.get("event") == "scheduled run started"
            and line.get("schedule_id") == schedule_id
        }

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log_tail(40)}" for p in self.processes)


@pytest.fixture
async def engines(mongo_server: str, database: str, tmp_path: Path) -> AsyncIterator[Engines]:
    running = Engines(mongo_server, database, tmp_path)
    try:
        await asyncio.gather(running.start(0), running.start(1))
        yield running
    finally:
        for client in running.clients:
            await client.close()
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in running.processes))


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0.0))


async def schedule_of(client: Client, schedule_id: str) -> ss.Schedule:
    response: ss.GetScheduleResponse = await ss_grpc.ScheduleServiceStub(
        client.channel
    ).GetSchedule(ss.GetScheduleRequest(schedule_id=schedule_id), timeout=10)
    return response.schedule


async def runs_by(client: Client, schedule_id: str, count: int, deadline: datetime) -> None:
    while (await schedule_of(client, schedule_id)).runs < count:
        assert datetime.now(UTC) < deadline, f"run {count} not started by {deadline}"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(360)
async def test_a_schedule_every_minute_fires_three_times_in_three_minutes_once_each(
    engines: Engines, mongo_server: str, database: str
) -> None:
    first, second = engines.clients
    pioneer = Pioneer(0, target="ipv4:" + ",".join(engines.targets))
    await pioneer.start()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    began = time.monotonic()
    try:
        await wait_for_handlers(first, {"sleep"})
        workflow = await first.create_workflow("every minute", NAP)
        created: ss.CreateScheduleResponse = await ss_grpc.ScheduleServiceStub(
            first.channel
        ).CreateSchedule(
            ss.CreateScheduleRequest(
                schedule=ss.Schedule(
                    workflow_id=workflow.workflow_id,
                    cron="* * * * *",
                    timezone="Europe/Madrid",
                    input=struct({"seconds": 0.5}),
                )
            ),
            timeout=10,
        )
        schedule_id = created.schedule.schedule_id
        minute = created.schedule.next_run_time.ToDatetime(tzinfo=UTC)
        minutes = [minute + timedelta(minutes=i) for i in range(3)]
        fired = timedelta(seconds=FIRE_SECONDS)

        # Minute 1: both engines up.
        await runs_by(first, schedule_id, 1, minutes[0] + fired)
        engines.kill(0)
        # Minute 2: the second engine alone.
        await runs_by(second, schedule_id, 2, minutes[1] + fired)
        await engines.start(0)
        engines.kill(1)
        # Minute 3: the first engine, started again, alone.
        await runs_by(first, schedule_id, 3, minutes[2] + fired)
        await engines.start(1)
        # Until well past the third minute: nothing more for any of the three.
        await sleep_until(minutes[2] + timedelta(seconds=20))

        final = await schedule_of(second, schedule_id)
        assert (final.runs, final.skipped_runs) == (3, 0)
        assert final.next_run_time.ToDatetime(tzinfo=UTC) == minutes[2] + timedelta(minutes=1)
        executions = mongo[database]["executions"]
        docs = await executions.find(
            {"workflow_id": workflow.workflow_id}, {"request_id": 1}
        ).to_list()
        assert sorted(d["request_id"] for d in docs) == [
            f"schedule:{schedule_id}:{m:%Y-%m-%dT%H:%M:%SZ}" for m in minutes
        ]
        for doc in docs:
            done = await second.wait_terminal(doc["_id"], 60)
            assert done.status == ex_pb.EXECUTION_STATUS_COMPLETED
        # Who started what, as each engine logged it: the second minute by the second
        # engine (the first was dead), the third by the first engine after its restart.
        second_minute, third_minute = (m.isoformat() for m in minutes[1:])
        assert second_minute in engines.started_by(1, schedule_id)
        assert third_minute in engines.started_by(0, schedule_id)
        print(
            f"\nschedule: 3 runs at {[m.strftime('%H:%M:%S') for m in minutes]}, "
            f"{time.monotonic() - began:.0f} s in all"
        )
    except (AssertionError, grpc.aio.AioRpcError):
        print(engines.logs())
        raise
    finally:
        await mongo.close()
        await pioneer.stop()
