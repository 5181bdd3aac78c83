"""The REST routes of cron schedules, on ScheduleService: thin handlers that check, call the
engine, and answer in JSON (schedule_bodies.py). Errors are raised and answered by the
middleware in errors.py.

    POST   /workflows/{workflow_id}/schedules   201, the schedule, Location: /schedules/{id}
    GET    /schedules                           ?workflow_id= &page_size= &page_token=
    GET    /schedules/{schedule_id}
    POST   /schedules/{schedule_id}/pause       the schedule, paused
    POST   /schedules/{schedule_id}/resume      the schedule, with its next time from now
    DELETE /schedules/{schedule_id}             204; the executions it started are kept
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiMapping

from services.gateway import params
from services.gateway.auth import engine_for
from services.gateway.bodies import read_json
from services.gateway.errors import BadRequest
from services.gateway.params import MAX_ID_CHARS, resource_id
from services.gateway.schedule_bodies import schedule, schedule_request
from services.gateway.state import SETTINGS

# What `GET /schedules` takes; anything else is refused rather than silently ignored.
LISTING_PARAMS = frozenset({"workflow_id", "page_size", "page_token"})


async def create_schedule(request: web.Request) -> web.Response:
    workflow_id = resource_id(request.match_info["workflow_id"], "workflow")
    settings = request.app[SETTINGS]
    asked = schedule_request(
        await read_json(request, settings.max_body_bytes, settings.max_json_depth)
    )
    created = await engine_for(request).create_schedule(
        workflow_id,
        asked.cron,
        timezone=asked.timezone,
        input=asked.input,
        overlap=asked.overlap,
        catchup_limit=asked.catchup_limit,
        priority=asked.priority,
        paused=asked.paused,
    )
    answer = schedule(created)
    return web.json_response(
        answer, status=201, headers={"Location": f"/schedules/{answer['schedule_id']}"}
    )


async def list_schedules(request: web.Request) -> web.Response:
    query = request.query
    _known(query)
    page = await engine_for(request).list_schedules(
        workflow_id=_workflow_id(query),
        page_size=params.page_size(query.get("page_size")),
        page_token=params.page_token(query.get("page_token")),
    )
    return web.json_response(
        {
            "schedules": [schedule(s) for s in page.schedules],
            "next_page_token": page.next_page_token or None,
        }
    )


async def get_schedule(request: web.Request) -> web.Response:
    return web.json_response(schedule(await engine_for(request).get_schedule(_id(request))))


async def pause_schedule(request: web.Request) -> web.Response:
    return web.json_response(schedule(await engine_for(request).pause_schedule(_id(request))))


async def resume_schedule(request: web.Request) -> web.Response:
    return web.json_response(schedule(await engine_for(request).resume_schedule(_id(request))))


async def delete_schedule(request: web.Request) -> web.Response:
    await engine_for(request).delete_schedule(_id(request))
    return web.Response(status=204)


def _id(request: web.Request) -> str:
    return resource_id(request.match_info["schedule_id"], "schedule")


def _known(query: MultiMapping[str]) -> None:
    for key in query:
        if key not in LISTING_PARAMS:
            raise BadRequest(
                f"unknown query parameter {key[:64]!r}; known: "
                + ", ".join(sorted(LISTING_PARAMS)),
                code="INVALID_ARGUMENT",
                details={"field": key[:64]},
            )
        if len(query.getall(key)) > 1:
            raise BadRequest(
                f"{key} is given more than once",
                code="INVALID_ARGUMENT",
                details={"field": key},
            )


def _workflow_id(query: MultiMapping[str]) -> str:
    value = query.get("workflow_id", "")
    if len(value) > MAX_ID_CHARS:
        raise BadRequest(
            f"workflow_id is at most {MAX_ID_CHARS} characters",
            code="INVALID_ARGUMENT",
            details={"field": "workflow_id"},
        )
    return value


def setup(app: web.Application) -> None:
    app.router.add_post("/workflows/{workflow_id}/schedules", create_schedule)
    app.router.add_get("/schedules", list_schedules)
    app.router.add_get("/schedules/{schedule_id}", get_schedule)
    app.router.add_post("/schedules/{schedule_id}/pause", pause_schedule)
    app.router.add_post("/schedules/{schedule_id}/resume", resume_schedule)
    app.router.add_delete("/schedules/{schedule_id}", delete_schedule)
