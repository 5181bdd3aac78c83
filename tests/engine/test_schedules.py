"""Cron schedules through the engine's gRPC API, on the real stack: create, read, list,
pause, resume and delete; each refusal names its field; and firing, made quick by setting a
schedule's next time in the database (a cron's unit is the minute): each time starts one
execution, under the request id `schedule:<id>:<time>`, however many engines race for it
and however often a round is cut short.

The three-minute run across engine restarts is tests/engine/test_schedules_across_engines.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import schedule_service_pb2 as ss
from discovery.engine.v1 import schedule_service_pb2_grpc as ss_grpc
from discovery.engine.v1 import workflow_pb2 as wf
from discovery.engine.v1 import workflow_service_pb2 as ws
from google.protobuf import json_format
from pymongo import AsyncMongoClient

from discovery_client.requests import struct
from services.auth import CLIENT
from services.engine.domain.errors import StoreUnavailable
from services.engine.domain.schedule import Schedule, parse_cron
from services.engine.quotas import TenantUsage
from services.engine.scheduler import Scheduler
from services.engine.store.mongo import MongoStore
from services.engine.store.repository import Page, ScheduleStore
from tests.stack import Client, Stack, error_info, start_stack, token

NAP = {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
# Far from any test's clock: a schedule that must not fire by itself while a test runs. A
# test that sets a time due by hand uses it: a minutely cron would also fire at the turn of
# the minute that may come during the test (a time of its own besides the test's).
YEARLY = "0 0 1 1 *"


class Schedules:
    """The test's view: ScheduleService, and the database where a test moves a schedule's
    next time to now."""

    def __init__(self, client: Client, mongo_uri: str, database: str) -> None:
        self.stub = ss_grpc.ScheduleServiceStub(client.channel)
        self._mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
        self.db = self._mongo[database]

    async def close(self) -> None:
        await self._mongo.close()

    async def create(self, workflow_id: str, cron: str = YEARLY, **fields: Any) -> ss.Schedule:
        document = fields.pop("input", None)
        schedule = ss.Schedule(workflow_id=workflow_id, cron=cron, **fields)
        if document is not None:
            schedule.input.CopyFrom(struct(document))
        response: ss.CreateScheduleResponse = await self.stub.CreateSchedule(
            ss.CreateScheduleRequest(schedule=schedule), timeout=10
        )
        return response.schedule

    async def get(self, schedule_id: str) -> ss.Schedule:
        response: ss.GetScheduleResponse = await self.stub.GetSchedule(
            ss.GetScheduleRequest(schedule_id=schedule_id), timeout=10
        )
        return response.schedule

    async def due(self, schedule_id: str, at: datetime, field: str = "next_run_time") -> None:
        updated = await self.db.schedules.update_one({"_id": schedule_id}, {"$set": {field: at}})
        assert updated.matched_count == 1

    async def started(self, schedule_id: str) -> dict[str, str]:
        """request_id -> execution_id of the executions the schedule started."""
        prefix = f"schedule:{schedule_id}:"
        cursor = self.db.executions.find(
            {"request_id": {"$regex": f"^{prefix}"}}, {"request_id": 1}
        )
        return {doc["request_id"]: doc["_id"] async for doc in cursor}

    async def until(
        self, schedule_id: str, check: Callable[[ss.Schedule], bool], seconds: float = 15
    ) -> ss.Schedule:
        deadline = time.monotonic() + seconds
        while True:
            schedule = await self.get(schedule_id)
            if check(schedule):
                return schedule
            assert time.monotonic() < deadline, f"not within {seconds} s: {schedule}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def schedules(stack: Stack) -> AsyncIterator[Schedules]:
    view = Schedules(stack.client, stack.mongo_uri, stack.database)
    try:
        yield view
    finally:
        await view.close()


def whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def ran(count: int) -> Callable[[ss.Schedule], bool]:
    return lambda schedule: schedule.runs == count


def slot_id(schedule_id: str, moment: datetime) -> str:
    return f"schedule:{schedule_id}:{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    reason, _, fields = error_info(caught.value)
    return caught.value.code(), reason, fields


# --- the API -----------------------------------------------------------------------------------


async def test_create_read_list_pause_resume_and_delete(stack: Stack, schedules: Schedules) -> None:
    naps = await stack.client.create_workflow("naps", NAP)
    other = await stack.client.create_workflow("other", NAP)
    first = await schedules.create(
        naps.workflow_id,
        "0 3 * * *",
        timezone="Europe/Madrid",
        input={"seconds": 0.1},
        overlap=ss.OVERLAP_POLICY_ALLOW,
        catchup_limit=5,
        priority=2,
    )
    created_at = first.create_time.ToDatetime(tzinfo=UTC)
    assert first.next_run_time.ToDatetime(tzinfo=UTC) == parse_cron(
        "0 3 * * *", "Europe/Madrid"
    ).after(created_at)
    assert (first.catchup_limit, first.priority, first.paused) == (5, 2, False)
    assert json_format.MessageToDict(first.input) == {"seconds": 0.1}
    assert await schedules.get(first.schedule_id) == first
    second = await schedules.create(naps.workflow_id, "*/5 * * * *")
    assert (second.overlap, second.catchup_limit) == (ss.OVERLAP_POLICY_SKIP, 1)  # defaults
    third = await schedules.create(other.workflow_id)

    everything: ss.ListSchedulesResponse = await schedules.stub.ListSchedules(
        ss.ListSchedulesRequest(), timeout=10
    )
    assert [s.schedule_id for s in everything.schedules] == [
        first.schedule_id,
        second.schedule_id,
        third.schedule_id,
    ]
    page: ss.ListSchedulesResponse = await schedules.stub.ListSchedules(
        ss.ListSchedulesRequest(workflow_id=naps.workflow_id, page_size=1), timeout=10
    )
    assert [s.schedule_id for s in page.schedules] == [first.schedule_id]
    rest: ss.ListSchedulesResponse = await schedules.stub.ListSchedules(
        ss.ListSchedulesRequest(
            workflow_id=naps.workflow_id, page_size=1, page_token=page.next_page_token
        ),
        timeout=10,
    )
    assert [s.schedule_id for s in rest.schedules] == [second.schedule_id]

    stopped: ss.PauseScheduleResponse = await schedules.stub.PauseSchedule(
        ss.PauseScheduleRequest(schedule_id=first.schedule_id), timeout=10
    )
    assert stopped.schedule.paused and not stopped.schedule.HasField("next_run_time")
    again: ss.PauseScheduleResponse = await schedules.stub.PauseSchedule(
        ss.PauseScheduleRequest(schedule_id=first.schedule_id), timeout=10
    )
    assert again.schedule == stopped.schedule
    back: ss.ResumeScheduleResponse = await schedules.stub.ResumeSchedule(
        ss.ResumeScheduleRequest(schedule_id=first.schedule_id), timeout=10
    )
    assert not back.schedule.paused and back.schedule.HasField("next_run_time")
    assert await schedules.get(first.schedule_id) == back.schedule

    await schedules.stub.DeleteSchedule(
        ss.DeleteScheduleRequest(schedule_id=second.schedule_id), timeout=10
    )
    for call in (
        schedules.get(second.schedule_id),
        schedules.stub.DeleteSchedule(
            ss.DeleteScheduleRequest(schedule_id=second.schedule_id), timeout=10
        ),
    ):
        assert await refused(call) == (grpc.StatusCode.NOT_FOUND, "SCHEDULE_NOT_FOUND", [])


async def test_each_bad_field_is_invalid_argument_naming_it(
    stack: Stack, schedules: Schedules
) -> None:
    naps = await stack.client.create_workflow("naps", NAP)
    definition = wf.Workflow(name="typed")
    json_format.ParseDict({"name": "echo", "handler": "echo"}, definition.steps.add())
    definition.input_schema.update(
        {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]}
    )
    typed: ws.CreateWorkflowResponse = await stack.client.workflows.CreateWorkflow(
        ws.CreateWorkflowRequest(workflow=definition), timeout=10
    )
    cases: list[tuple[str, dict[str, Any], str]] = [
        (naps.workflow_id, {"cron": "every day"}, "cron"),
        (naps.workflow_id, {"cron": "0 3 * *"}, "cron"),
        (naps.workflow_id, {"cron": "0 0 30 2 *"}, "cron"),
        (naps.workflow_id, {"timezone": "Nowhere/Town"}, "timezone"),
        (naps.workflow_id, {"catchup_limit": 101}, "catchup_limit"),
        (naps.workflow_id, {"priority": 9}, "priority"),
        (naps.workflow_id, {"overlap": 7}, "overlap"),
        (naps.workflow_id, {"schedule_id": "mine"}, "schedule.schedule_id"),
        (naps.workflow_id, {"runs": 3}, "runs"),
        (naps.workflow_id, {"input": {"$where": 1}}, "input.$where"),
        ("", {}, "workflow_id"),
        (typed.workflow.workflow_id, {"input": {"seconds": "soon"}}, "input.seconds"),
        (typed.workflow.workflow_id, {"input": {}}, "input.seconds"),
    ]
    for workflow_id, fields, field in cases:
        code, _, named = await refused(schedules.create(workflow_id, **{"cron": YEARLY, **fields}))
        assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), fields
    assert await refused(schedules.create("no-such-workflow")) == (
        grpc.StatusCode.NOT_FOUND,
        "WORKFLOW_NOT_FOUND",
        [],
    )
    listed: ss.ListSchedulesResponse = await schedules.stub.ListSchedules(
        ss.ListSchedulesRequest(), timeout=10
    )
    assert list(listed.schedules) == []  # nothing refused was kept


async def test_another_tenants_schedule_looks_missing(stack: Stack, schedules: Schedules) -> None:
    naps = await stack.client.create_workflow("naps", NAP)
    ours = await schedules.create(naps.workflow_id)
    theirs = Client(stack.client.target, token(CLIENT, tenant="acme"))
    try:
        stub = ss_grpc.ScheduleServiceStub(theirs.channel)
        sid = ours.schedule_id
        for call in (
            stub.GetSchedule(ss.GetScheduleRequest(schedule_id=sid), timeout=10),
            stub.PauseSchedule(ss.PauseScheduleRequest(schedule_id=sid), timeout=10),
            stub.ResumeSchedule(ss.ResumeScheduleRequest(schedule_id=sid), timeout=10),
            stub.DeleteSchedule(ss.DeleteScheduleRequest(schedule_id=sid), timeout=10),
        ):
            assert await refused(call) == (grpc.StatusCode.NOT_FOUND, "SCHEDULE_NOT_FOUND", [])
        listed: ss.ListSchedulesResponse = await stub.ListSchedules(
            ss.ListSchedulesRequest(), timeout=10
        )
        assert list(listed.schedules) == []
        # Nor may it schedule our workflow: it does not exist for them.
        created = stub.CreateSchedule(
            ss.CreateScheduleRequest(
                schedule=ss.Schedule(workflow_id=naps.workflow_id, cron=YEARLY)
            ),
            timeout=10,
        )
        assert (await refused(created))[:2] == (grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND")
    finally:
        await theirs.close()
    assert (await schedules.get(ours.schedule_id)).paused is False


# --- firing ------------------------------------------------------------------------------------


async def test_a_due_time_starts_one_execution_under_its_request_id(
    stack: Stack, schedules: Schedules
) -> None:
    naps = await stack.client.create_workflow("naps", NAP)
    created = await schedules.create(naps.workflow_id, input={"seconds": 0.1})
    slot = whole_second(datetime.now(UTC) - timedelta(seconds=1))
    await schedules.due(created.schedule_id, slot)

    fired = await schedules.until(created.schedule_id, ran(1))
    assert await schedules.started(created.schedule_id) == {
        slot_id(created.schedule_id, slot): fired.last_execution_id
    }
    assert fired.last_run_time.ToDatetime(tzinfo=UTC) == slot
    assert fired.next_run_time.ToDatetime(tzinfo=UTC) > slot
    assert fired.skipped_runs == 0
    done = await stack.client.wait_terminal(fired.last_execution_id)
    assert done.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert done.workflow_id == naps.workflow_id


async def test_overlap_skip_skips_while_the_last_run_goes_on_and_allow_does_not(
    stack: Stack, schedules: Schedules
) -> None:
    long_nap = await stack.client.create_workflow("long nap", NAP)
    skip = await schedules.create(long_nap.workflow_id, input={"seconds": 30})
    allow = await schedules.create(
        long_nap.workflow_id,
        input={"seconds": 30},
        overlap=ss.OVERLAP_POLICY_ALLOW,
    )
    now = datetime.now(UTC)
    for schedule in (skip, allow):
        await schedules.due(schedule.schedule_id, whole_second(now - timedelta(seconds=2)))
    for schedule in (skip, allow):
        await schedules.until(schedule.schedule_id, ran(1))
    # Both first runs nap for 30 s: the next time comes while they go on.
    for schedule in (skip, allow):
        await schedules.due(schedule.schedule_id, whole_second(now - timedelta(seconds=1)))
    skipped = await schedules.until(skip.schedule_id, lambda s: s.skipped_runs == 1)
    allowed = await schedules.until(allow.schedule_id, ran(2))
    assert skipped.runs == 1 and allowed.skipped_runs == 0
    assert len(await schedules.started(skip.schedule_id)) == 1
    running = await schedules.started(allow.schedule_id)
    assert len(running) == 2
    for execution_id in running.values():
        assert (await stack.client.get(execution_id)).status in (
            ex_pb.EXECUTION_STATUS_RUNNING,
            ex_pb.EXECUTION_STATUS_PENDING,
        )


async def test_after_downtime_the_latest_missed_times_start_within_the_catchup_limit(
    stack: Stack, schedules: Schedules
) -> None:
    naps = await stack.client.create_workflow("naps", NAP)
    yearly = await schedules.create(
        naps.workflow_id,
        YEARLY,
        input={"seconds": 0.1},
        catchup_limit=2,
        overlap=ss.OVERLAP_POLICY_ALLOW,
    )
    # As if no engine had run for three years: four New Years missed, all long past.
    year = datetime.now(UTC).year
    await schedules.due(yearly.schedule_id, datetime(year - 3, 1, 1, tzinfo=UTC))

    caught_up = await schedules.until(yearly.schedule_id, lambda s: s.runs > 0)
    assert (caught_up.runs, caught_up.skipped_runs) == (2, 2)
    latest = [datetime(year - 1, 1, 1, tzinfo=UTC), datetime(year, 1, 1, tzinfo=UTC)]
    started = await schedules.started(yearly.schedule_id)
    assert set(started) == {slot_id(yearly.schedule_id, t) for t in latest}
    assert caught_up.last_run_time.ToDatetime(tzinfo=UTC) == latest[-1]
    assert caught_up.next_run_time.ToDatetime(tzinfo=UTC) == datetime(year + 1, 1, 1, tzinfo=UTC)


async def test_a_paused_schedule_starts_nothing_and_resuming_skips_what_passed(
    stack: Stack, schedules: Schedules
) -> None:
    naps = await stack.client.create_workflow("naps", NAP)
    minutely = await schedules.create(naps.workflow_id, "* * * * *", input={"seconds": 0.1})
    await schedules.stub.PauseSchedule(
        ss.PauseScheduleRequest(schedule_id=minutely.schedule_id), timeout=10
    )
    # As if paused ten minutes ago: those times passed while it was.
    ten_ago = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    await schedules.due(minutely.schedule_id, ten_ago, field="paused_next_run_time")
    await asyncio.sleep(3)  # more than a scheduler's round
    assert await schedules.started(minutely.schedule_id) == {}

    resumed: ss.ResumeScheduleResponse = await schedules.stub.ResumeSchedule(
        ss.ResumeScheduleRequest(schedule_id=minutely.schedule_id), timeout=10
    )
    assert resumed.schedule.runs == 0
    assert resumed.schedule.skipped_runs in (11, 12)  # 12 if a minute turned meanwhile
    assert resumed.schedule.next_run_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC)
    assert await schedules.started(minutely.schedule_id) == {}


class SaveFailsOnce:
    """The store, whose first write of a schedule fails as a database away would: the round
    that started a time ends without recording it."""

    def __init__(self, store: ScheduleStore) -> None:
        self._store = store
        self.failed = False

    async def create_schedule(self, schedule: Schedule) -> None:
        await self._store.create_schedule(schedule)

    async def get_schedule(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        return await self._store.get_schedule(tenant_id, schedule_id)

    async def list_schedules(
        self, tenant_id: str, page_size: int, page_token: str, workflow_id: str
    ) -> Page[Schedule]:
        return await self._store.list_schedules(tenant_id, page_size, page_token, workflow_id)

    async def save_schedule(self, schedule: Schedule) -> bool:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("the database is unavailable (test); retry")
        return await self._store.save_schedule(schedule)

    async def delete_schedule(self, tenant_id: str, schedule_id: str) -> bool:
        return await self._store.delete_schedule(tenant_id, schedule_id)

    async def due_schedules(self, until: datetime, limit: int) -> list[Schedule]:
        return await self._store.due_schedules(until, limit)


@pytest.fixture
async def database_store(stack: Stack) -> AsyncIterator[MongoStore]:
    """The store on the stack's database, as a second engine process would open it."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    try:
        yield MongoStore(client, stack.database)
    finally:
        await client.close()


async def own_scheduler(
    stack: Stack, store: ScheduleStore, usage: MongoStore, *, max_running: int = 10_000
) -> Scheduler:
    """A scheduler beside the engine's, on the engine's runner: the engine's own is stopped."""
    assert stack.engine.scheduler is not None and stack.engine.runner is not None
    await stack.engine.scheduler.stop()
    counts = TenantUsage(usage, max_running=max_running, max_stored_bytes=2**40)
    return Scheduler(store, stack.engine.runner, counts, stack.engine.metrics)


async def test_a_round_cut_short_after_its_start_starts_the_same_execution_again(
    stack: Stack, schedules: Schedules, database_store: MongoStore
) -> None:
    store = SaveFailsOnce(database_store)
    scheduler = await own_scheduler(stack, store, database_store)
    naps = await stack.client.create_workflow("naps", NAP)
    created = await schedules.create(naps.workflow_id, input={"seconds": 0.1})
    slot = whole_second(datetime.now(UTC) - timedelta(seconds=1))
    await schedules.due(created.schedule_id, slot)

    await scheduler.round()  # started the time, then could not record it
    assert store.failed
    first = await schedules.started(created.schedule_id)
    assert len(first) == 1 and (await schedules.get(created.schedule_id)).runs == 0

    await scheduler.round()  # the time is still due: started again, the same execution
    recorded = await schedules.get(created.schedule_id)
    assert await schedules.started(created.schedule_id) == first
    assert (recorded.runs, recorded.last_execution_id) == (
        1,
        first[slot_id(created.schedule_id, slot)],
    )


async def test_a_start_refused_for_good_skips_its_time(
    stack: Stack, schedules: Schedules, database_store: MongoStore
) -> None:
    # The tenant may run no execution at all: the start is refused with QUOTA_EXCEEDED.
    scheduler = await own_scheduler(stack, database_store, database_store, max_running=0)
    naps = await stack.client.create_workflow("naps", NAP)
    created = await schedules.create(naps.workflow_id, input={"seconds": 0.1})
    await schedules.due(created.schedule_id, whole_second(datetime.now(UTC)))
    await scheduler.round()
    after = await schedules.get(created.schedule_id)
    assert (after.runs, after.skipped_runs) == (0, 1)
    assert after.next_run_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) - timedelta(seconds=1)
    assert await schedules.started(created.schedule_id) == {}


# --- two engines on one database ---------------------------------------------------------------


@pytest.fixture
async def second_engine(stack: Stack) -> AsyncIterator[Stack]:
    other = await start_stack(stack.mongo_uri, stack.database)
    try:
        yield other
    finally:
        await other.stop()


async def test_two_engines_starting_one_request_id_at_once_make_one_execution(
    stack: Stack, second_engine: Stack, schedules: Schedules
) -> None:
    naps = await stack.client.create_workflow("naps", NAP)
    for i in range(20):
        key = f"race-{i}"
        answers = await asyncio.gather(
            stack.client.start(naps.workflow_id, {"seconds": 0.1}, request_id=key),
            second_engine.client.start(naps.workflow_id, {"seconds": 0.1}, request_id=key),
        )
        assert answers[0].execution_id == answers[1].execution_id, key
        assert await schedules.db.executions.count_documents({"request_id": key}) == 1


async def test_two_engines_firing_one_schedule_start_each_time_once(
    stack: Stack, second_engine: Stack, schedules: Schedules, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.engine.scheduler")
    naps = await stack.client.create_workflow("naps", NAP)
    created = await schedules.create(
        naps.workflow_id, input={"seconds": 0.1}, overlap=ss.OVERLAP_POLICY_ALLOW
    )
    slots = []
    for runs in (1, 2, 3):
        # A little ahead: both engines' rounds see it coming and wake for it at once.
        slot = whole_second(datetime.now(UTC) + timedelta(seconds=3))
        slots.append(slot)
        await schedules.due(created.schedule_id, slot)
        await schedules.until(created.schedule_id, ran(runs))
    final = await schedules.get(created.schedule_id)
    started = await schedules.started(created.schedule_id)
    assert set(started) == {slot_id(created.schedule_id, s) for s in slots}
    assert (final.runs, final.skipped_runs) == (3, 0)
    assert len(set(started.values())) == 3
    # The engines did race: a round found the schedule moved on by the other one.
    assert any("another engine" in r.getMessage() for r in caplog.records), "no race seen"
