"""Every line logged while a request about one execution is served (its path names it:
`/executions/{execution_id}/…`, `/ws/{execution_id}`) carries that `execution_id`
(services/jsonlog.py)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from services import jsonlog


@web.middleware
async def log_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    execution_id = request.match_info.get("execution_id")
    if not execution_id:
        return await handler(request)
    with jsonlog.about(execution_id):
        return await handler(request)
