"""ScheduleService: cron schedules of workflows (services/engine/schedules.py; firing them is
services/engine/scheduler.py's). Fields at fault are named as in the Schedule message
(`cron`, `timezone`, `input.<key>`…), as CreateWorkflow names a workflow's."""

from __future__ import annotations

from discovery.engine.v1 import schedule_service_pb2 as ss
from discovery.engine.v1 import schedule_service_pb2_grpc as ss_grpc

from services.auth import Principal, TokenAuthority
from services.engine.domain.errors import InvalidArgument
from services.engine.domain.schedule import OVERLAP_ALLOW, OVERLAP_SKIP, Schedule
from services.engine.rpc import convert
from services.engine.rpc.servicer import Context, page_size_of, required_text
from services.engine.schedules import NewSchedule, Schedules
from services.grpc_auth import principal

_OVERLAP = {OVERLAP_SKIP: ss.OVERLAP_POLICY_SKIP, OVERLAP_ALLOW: ss.OVERLAP_POLICY_ALLOW}
_OVERLAP_NAMES = {number: name for name, number in _OVERLAP.items()}
# What the engine assigns: a request that sets one is refused, naming it.
_ASSIGNED_TIMES = ("next_run_time", "last_run_time", "create_time")
_ASSIGNED_VALUES = ("last_execution_id", "runs", "skipped_runs")


class ScheduleServicer(ss_grpc.ScheduleServiceServicer):
    def __init__(self, schedules: Schedules, authority: TokenAuthority) -> None:
        self._schedules = schedules
        self._authority = authority

    def _caller(self, context: Context) -> Principal:
        return principal(context, self._authority)

    async def CreateSchedule(
        self, request: ss.CreateScheduleRequest, context: Context
    ) -> ss.CreateScheduleResponse:
        given = request.schedule
        if given.schedule_id:
            raise InvalidArgument("schedule.schedule_id", "assigned by the engine; leave empty")
        for name in _ASSIGNED_TIMES:
            if given.HasField(name):
                raise InvalidArgument(name, "assigned by the engine; leave empty")
        for name in _ASSIGNED_VALUES:
            if getattr(given, name):
                raise InvalidArgument(name, "assigned by the engine; leave empty")
        if given.overlap == ss.OVERLAP_POLICY_UNSPECIFIED:
            overlap = OVERLAP_SKIP
        elif given.overlap in _OVERLAP_NAMES:
            overlap = _OVERLAP_NAMES[given.overlap]
        else:
            raise InvalidArgument("overlap", "OVERLAP_POLICY_SKIP or OVERLAP_POLICY_ALLOW")
        schedule = await self._schedules.create(
            NewSchedule(
                workflow_id=required_text(given.workflow_id, "workflow_id"),
                cron=given.cron,
                timezone=given.timezone,
                input=convert.from_struct(given.input),
                overlap=overlap,
                catchup_limit=given.catchup_limit if given.HasField("catchup_limit") else None,
                priority=given.priority,
                paused=given.paused,
            ),
            tenant=self._caller(context).tenant,
        )
        return ss.CreateScheduleResponse(schedule=message(schedule))

    async def GetSchedule(
        self, request: ss.GetScheduleRequest, context: Context
    ) -> ss.GetScheduleResponse:
        schedule = await self._schedules.get(
            required_text(request.schedule_id, "schedule_id"), tenant=self._caller(context).tenant
        )
        return ss.GetScheduleResponse(schedule=message(schedule))

    async def ListSchedules(
        self, request: ss.ListSchedulesRequest, context: Context
    ) -> ss.ListSchedulesResponse:
        if len(request.workflow_id) > 200:
            raise InvalidArgument("workflow_id", "at most 200 characters")
        page = await self._schedules.list(
            tenant=self._caller(context).tenant,
            page_size=page_size_of(request.page_size),
            page_token=request.page_token,
            workflow_id=request.workflow_id,
        )
        return ss.ListSchedulesResponse(
            schedules=[message(s) for s in page.items], next_page_token=page.next_page_token
        )

    async def PauseSchedule(
        self, request: ss.PauseScheduleRequest, context: Context
    ) -> ss.PauseScheduleResponse:
        schedule = await self._schedules.pause(
            required_text(request.schedule_id, "schedule_id"), tenant=self._caller(context).tenant
        )
        return ss.PauseScheduleResponse(schedule=message(schedule))

    async def ResumeSchedule(
        self, request: ss.ResumeScheduleRequest, context: Context
    ) -> ss.ResumeScheduleResponse:
        schedule = await self._schedules.resume(
            required_text(request.schedule_id, "schedule_id"), tenant=self._caller(context).tenant
        )
        return ss.ResumeScheduleResponse(schedule=message(schedule))

    async def DeleteSchedule(
        self, request: ss.DeleteScheduleRequest, context: Context
    ) -> ss.DeleteScheduleResponse:
        await self._schedules.delete(
            required_text(request.schedule_id, "schedule_id"), tenant=self._caller(context).tenant
        )
        return ss.DeleteScheduleResponse()


def message(schedule: Schedule) -> ss.Schedule:
    return ss.Schedule(
        schedule_id=schedule.schedule_id,
        workflow_id=schedule.workflow_id,
        cron=schedule.cron,
        timezone=schedule.timezone,
        input=convert.struct(schedule.input),
        overlap=_OVERLAP[schedule.overlap],
        catchup_limit=schedule.catchup_limit,
        paused=schedule.paused,
        priority=schedule.priority,
        next_run_time=convert.timestamp(schedule.next_run_time),
        last_run_time=convert.timestamp(schedule.last_run_time),
        last_execution_id=schedule.last_execution_id or "",
        create_time=convert.timestamp(schedule.created_at),
        runs=schedule.runs,
        skipped_runs=schedule.skipped_runs,
    )
