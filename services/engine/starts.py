"""A start within the tenant's quotas: what a client's start (rpc/executions.py) and a
schedule's (scheduler.py) both go through, so that a scheduled run counts against its
tenant's running executions and stored bytes like any other."""

from __future__ import annotations

from typing import Any

from services.engine.clock import utc_now
from services.engine.domain import execution as ex
from services.engine.domain.errors import QuotaExceeded
from services.engine.quotas import TenantUsage
from services.engine.runner import Runner


async def start_within_quotas(
    runner: Runner,
    usage: TenantUsage,
    *,
    tenant: str,
    workflow_id: str,
    document: dict[str, Any],
    manual: bool,
    request_id: str,
    priority: int,
    input_bytes: int,
) -> ex.ExecutionState:
    """Starts an execution if the tenant's quotas allow it (`input_bytes`: its input as it
    came). A start that repeats an earlier one by request_id is answered with that one, over
    the quotas or not."""
    try:
        reserved = await usage.admit_start(tenant, input_bytes)
    except QuotaExceeded:
        if not request_id or not await runner.started_before(request_id, tenant=tenant):
            raise
        reserved = None
    began = utc_now()
    try:
        state = await runner.start(
            workflow_id,
            document,
            manual,
            request_id,
            tenant=tenant,
            priority=priority,
            # What `stored` below charges the tenant for its input; retention gives it back.
            input_bytes=reserved.input_bytes if reserved is not None else 0,
        )
    except BaseException:
        if reserved is not None:
            usage.dropped(reserved)
        raise
    if reserved is not None:
        # Created before this call: an earlier start answered again, nothing new kept.
        if state.created_at < began:
            usage.dropped(reserved)
        else:
            usage.stored(reserved)
    return state
