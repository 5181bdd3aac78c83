"""The legacy REST API (CONTRACT.md): thin handlers that check, call the engine, and answer
in the legacy shapes. Errors are raised and answered by the middleware in errors.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web
from discovery.engine.v1 import execution_pb2 as ex_pb

from services.auth import ADMIN, CLIENT, WATCH_TOKEN_SECONDS, WATCHER
from services.gateway import (
    legacy,
    legacy_step_queue,
    legacy_values,
    legacy_workflows,
    params,
    route_bodies,
)
from services.gateway.auth import AUTHORITY, caller, engine_for
from services.gateway.bodies import read_json
from services.gateway.errors import Forbidden
from services.gateway.openapi import spec
from services.gateway.params import resource_id
from services.gateway.route_bodies import StartRequest
from services.gateway.sse import events
from services.gateway.state import ENGINE, SETTINGS, STREAMS
from services.gateway.websocket import websocket

HEALTH_TIMEOUT_SECONDS = 1.0
# How often a long poll looks whether its HTTP client is still there.
DISCONNECT_CHECK_SECONDS = 0.2


def _json(value: Any, status: int = 200, **headers: str) -> web.Response:
    return web.json_response(value, status=status, headers=headers or None)


async def _body(request: web.Request) -> Any:
    settings = request.app[SETTINGS]
    return await read_json(request, settings.max_body_bytes, settings.max_json_depth)


async def _start(request: web.Request, start: StartRequest) -> web.Response:
    started = await engine_for(request).start_execution(
        resource_id(start.workflow_id, "workflow"),
        start.document,
        manual=start.manual,
        request_id=params.idempotency_key(request.headers),
        priority=start.priority,
    )
    answer = legacy.accepted(started.execution, started.watch_token)
    return _json(answer, 202, Location=answer["tracking_url"])


async def _status_document(request: web.Request, execution: ex_pb.Execution) -> dict[str, Any]:
    """The legacy status document, whose `current_step` is never null while the workflow has
    steps (legacy.standing_step says why): when the engine names no current step, one more
    call asks for the workflow's steps. If that call fails, so does the answer: a status with a
    null `current_step` would be a partial one, and the very one that stops the seed's poller."""
    document = legacy.status_document(execution)
    if document["current_step"] is None:
        steps = await engine_for(request).list_steps(execution.execution_id)
        document["current_step"] = legacy.standing_step(execution, steps)
    return document


# --- executions ----------------------------------------------------------------------------


async def execute_async(request: web.Request) -> web.Response:
    workflow_id = resource_id(request.match_info["workflow_id"], "workflow")
    return await _start(request, route_bodies.start_by_path(workflow_id, await _body(request)))


async def execute_async_legacy(request: web.Request) -> web.Response:
    return await _start(request, route_bodies.start_legacy(await _body(request)))


async def execute_sync(request: web.Request) -> web.Response:
    """Waits for the end, at most the configured bound. Still running then: 202 with the async
    answer and `last_seq`, so a WebSocket opened with `?after_seq=last_seq` misses nothing."""
    start = route_bodies.start_legacy(await _body(request))
    done = await engine_for(request).execute_workflow(
        resource_id(start.workflow_id, "workflow"),
        start.document,
        wait_seconds=request.app[SETTINGS].sync_wait_seconds,
        manual=start.manual,
        request_id=params.idempotency_key(request.headers),
        priority=start.priority,
    )
    execution = done.execution
    if done.finished:
        return _json(await _status_document(request, execution))
    answer = {**legacy.accepted(execution, done.watch_token), "last_seq": execution.last_seq}
    return _json(answer, 202, Location=answer["tracking_url"])


async def list_executions(request: web.Request) -> web.Response:
    """The newest executions first, as summaries (no history): what the dashboard lists,
    narrowed by the query's filters (params.execution_listing)."""
    only = params.execution_listing(request.query)
    size = params.limit(request.query.get("limit"))
    token = params.page_token(request.query.get("page_token"))
    page = await engine_for(request).list_executions(
        workflow_id=only.workflow_id,
        statuses=only.statuses,
        created_after=only.created_after,
        created_before=only.created_before,
        workflow_name_contains=only.workflow_name_contains,
        page_size=size,
        page_token=token,
    )
    listed = [legacy.execution_summary(e) for e in page.executions]
    return _json({"executions": listed, "next_page_token": page.next_page_token or None})


async def status(request: web.Request) -> web.Response:
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    return _json(
        await _status_document(request, await engine_for(request).get_execution(execution_id))
    )


async def steps(request: web.Request) -> web.Response:
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    listed = await engine_for(request).list_steps(execution_id)
    return _json(legacy.steps_listing(execution_id, listed))


async def watch_token(request: web.Request) -> web.Response:
    """A fresh short-lived token that may watch this one execution: what a browser puts in
    `/ws/{id}?access_token=`, instead of a long-lived key that would leak into URLs."""
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    principal = caller(request).principal
    if principal.role not in (CLIENT, ADMIN):
        # A watch token minting the next one would make a leaked one live forever.
        raise Forbidden(
            f"role {principal.role!r} may not mint watch tokens: a watch token ends when it "
            "expires; ask whoever gave it for a fresh one"
        )
    # Asked as the caller: another tenant's execution is as missing here as anywhere.
    execution = await engine_for(request).get_execution(execution_id)
    token = request.app[AUTHORITY].mint(
        subject=principal.subject,
        role=WATCHER,
        tenant=principal.tenant,
        ttl_seconds=WATCH_TOKEN_SECONDS,
        execution_id=execution.execution_id,
    )
    return _json(
        {
            "execution_id": execution.execution_id,
            "watch_token": token,
            "expires_in": WATCH_TOKEN_SECONDS,
        }
    )


async def advance(request: web.Request) -> web.Response:
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    data = route_bodies.advance_data(await _body(request))
    return _json(
        await _status_document(request, await engine_for(request).advance(execution_id, data))
    )


async def retry(request: web.Request) -> web.Response:
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    from_step, request_id = route_bodies.retry_request(await _body(request))
    execution = await engine_for(request).retry(
        execution_id, from_step=from_step, request_id=request_id
    )
    return _json(await _status_document(request, execution))


async def cancel(request: web.Request) -> web.Response:
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    reason = route_bodies.cancel_reason(await _body(request))
    return _json(
        await _status_document(request, await engine_for(request).cancel(execution_id, reason))
    )


# --- step reports over HTTP ----------------------------------------------------------------


async def step_progress(request: web.Request) -> web.Response:
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    step = params.step_name(request.match_info["step_name"])
    token = params.attempt_token(request.headers)
    progress = route_bodies.progress(await _body(request))
    cancel_requested = await engine_for(request).report_progress(
        execution_id, step, token, progress
    )
    return _json(
        {
            "execution_id": execution_id,
            "step_name": step,
            "accepted": True,
            "cancel_requested": cancel_requested,
        }
    )


async def step_complete(request: web.Request) -> web.Response:
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    step = params.step_name(request.match_info["step_name"])
    token = params.attempt_token(request.headers)
    success, result, error = route_bodies.completion(await _body(request))
    await engine_for(request).complete_step(
        execution_id, step, token, success=success, result=result, error=error
    )
    return _json(
        {"execution_id": execution_id, "step_name": step, "accepted": True, "success": success}
    )


# --- workflows -----------------------------------------------------------------------------


async def create_workflow(request: web.Request) -> web.Response:
    definition = route_bodies.workflow_definition(await _body(request))
    created = legacy_workflows.workflow(await engine_for(request).create_workflow(definition))
    return _json(created, 201, Location=f"/workflows/{created['workflow_id']}")


async def list_workflows(request: web.Request) -> web.Response:
    size = params.page_size(request.query.get("page_size"))
    token = params.page_token(request.query.get("page_token"))
    page = await engine_for(request).list_workflows(page_size=size, page_token=token)
    listed = [legacy_workflows.workflow(w) for w in page.workflows]
    return _json({"workflows": listed, "next_page_token": page.next_page_token or None})


async def get_workflow(request: web.Request) -> web.Response:
    workflow_id = resource_id(request.match_info["workflow_id"], "workflow")
    version = params.workflow_version(request.query.get("version"))
    workflow = await engine_for(request).get_workflow(workflow_id, version=version)
    return _json(legacy_workflows.workflow(workflow))


async def update_workflow(request: web.Request) -> web.Response:
    """A new version when the body (as POST /workflows takes it) differs from the current
    one; `changed` says whether it did. Executions already started keep their version."""
    workflow_id = resource_id(request.match_info["workflow_id"], "workflow")
    definition = route_bodies.workflow_definition(await _body(request))
    updated = await engine_for(request).update_workflow(workflow_id, definition)
    return _json({**legacy_workflows.workflow(updated.workflow), "changed": updated.changed})


async def list_workflow_versions(request: web.Request) -> web.Response:
    workflow_id = resource_id(request.match_info["workflow_id"], "workflow")
    size = params.page_size(request.query.get("page_size"))
    token = params.page_token(request.query.get("page_token"))
    page = await engine_for(request).workflow_versions(
        workflow_id, page_size=size, page_token=token
    )
    listed = [legacy_workflows.workflow(w) for w in page.versions]
    return _json({"versions": listed, "next_page_token": page.next_page_token or None})


# --- the step queue ------------------------------------------------------------------------


async def queue(request: web.Request) -> web.Response:
    """What waits in the step queue, by handler (the caller's tenant, and every tenant
    together), and the runners that polled lately."""
    return _json(
        legacy_step_queue.step_queue(
            await engine_for(request).get_step_queue(), legacy_values.utc_now()
        )
    )


async def step_queue_poll(request: web.Request) -> web.Response:
    """The REST twin of StepQueueService.PollStepAttempts, for runners that speak only HTTP
    (a runner's token). Each attempt answered is already taken for the runner: it reports
    through the step routes above with the attempt's token in X-Attempt-Token."""
    poll = route_bodies.step_queue_poll(await _body(request))
    call = asyncio.ensure_future(
        engine_for(request).poll_step_attempts(
            poll.runner_id, poll.handlers, poll.max_attempts, poll.wait_seconds
        )
    )
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not call.done():
            # The client went away (or the gateway stops): the poll ends at the engine too,
            # so it takes nothing more. What it took already waits out its heartbeat timeout
            # and is then retried.
            call.cancel()
    if call.cancelled() or not call.done():
        with contextlib.suppress(asyncio.CancelledError):
            await call
        return web.Response(status=499, reason="Client Closed Request")  # nobody reads it
    return _json(legacy_step_queue.step_attempts(call.result()))


async def _client_gone(request: web.Request) -> None:
    """Returns when the HTTP client has closed its connection. aiohttp only tells a handler
    so by cancelling it, and that (handler_cancellation) would apply to every route."""
    # No event to wait on instead: the transport's loss is only seen by looking.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(DISCONNECT_CHECK_SECONDS)


# --- the gateway itself --------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    serving = await request.app[ENGINE].serving(HEALTH_TIMEOUT_SECONDS)
    return _json(
        {
            "status": "ok" if serving else "unavailable",
            "engine": "serving" if serving else "unavailable",
            "streams": request.app[STREAMS].count,
        },
        200 if serving else 503,
    )


_SPEC_TEXT = json.dumps(spec(), indent=1)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=_SPEC_TEXT, content_type="application/json")


def setup(app: web.Application) -> None:
    app.router.add_post("/workflows/{workflow_id}/execute-async", execute_async)
    app.router.add_post("/execute-async/", execute_async_legacy)
    app.router.add_post("/execute/", execute_sync)
    app.router.add_get("/executions", list_executions)
    app.router.add_get("/executions/{execution_id}/status", status)
    app.router.add_get("/executions/{execution_id}/steps", steps)
    app.router.add_get("/executions/{execution_id}/events", events)
    app.router.add_post("/executions/{execution_id}/steps/{step_name}/progress", step_progress)
    app.router.add_post("/executions/{execution_id}/steps/{step_name}/complete", step_complete)
    app.router.add_post("/executions/{execution_id}/watch-token", watch_token)
    app.router.add_post("/executions/{execution_id}/advance", advance)
    app.router.add_post("/executions/{execution_id}/cancel", cancel)
    app.router.add_post("/executions/{execution_id}/retry", retry)
    app.router.add_get("/ws/{execution_id}", websocket)
    app.router.add_post("/workflows", create_workflow)
    app.router.add_get("/workflows", list_workflows)
    app.router.add_get("/workflows/{workflow_id}", get_workflow)
    app.router.add_put("/workflows/{workflow_id}", update_workflow)
    app.router.add_get("/workflows/{workflow_id}/versions", list_workflow_versions)
    app.router.add_get("/queue", queue)
    app.router.add_post("/step-queue/poll", step_queue_poll)
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi)
