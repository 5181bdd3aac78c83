"""What the engine's gRPC servicers share: each is thin (unpack, call the runner, pack); errors
are the interceptor's job (errors.py). One module per service: workflows.py, executions.py,
step_reports.py, step_queue.py, and tokens.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from discovery.engine.v1 import execution_pb2 as pb

from services.auth import WATCHER, Principal, TokenAuthority
from services.engine.domain.errors import ExecutionNotFound, InvalidArgument
from services.engine.quotas import TenantUsage
from services.engine.runner import Runner
from services.grpc_auth import principal
from services.ratelimit import RateLimiter

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
DEFAULT_PAGE = 100
MAX_PAGE = 1000
# Progress reports in one ReportStepProgress or CompleteStep call.
MAX_REPORTS_PER_CALL = 1000


def required_text(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > 200:
        raise InvalidArgument(field, "at most 200 characters")
    return value


def reports_at_most(
    reports: Sequence[pb.StepProgress], most: int, field: str
) -> Sequence[pb.StepProgress]:
    if len(reports) > most:
        raise InvalidArgument(field, f"at most {most} progress reports in one call")
    return reports


def page_size_of(value: int) -> int:
    if value < 0 or value > MAX_PAGE:
        raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE}")
    return value or DEFAULT_PAGE


@dataclass(frozen=True)
class Limits:
    """How fast each principal may go: starts per tenant, progress per attempt; and what
    each tenant may keep (running executions, stored bytes)."""

    starts: RateLimiter
    progress: RateLimiter
    usage: TenantUsage


class Servicer:
    def __init__(self, runner: Runner, authority: TokenAuthority, limits: Limits) -> None:
        self._runner = runner
        self._authority = authority
        self._limits = limits

    def _caller(self, context: Context) -> Principal:
        # The AuthInterceptor has checked the role already; this gives the scope.
        return principal(context, self._authority)

    def _tenant_of(self, context: Context, execution_id: str) -> str:
        """The caller's tenant, once it is clear it may see `execution_id` at all: a watcher
        token sees its one execution, and any other looks missing."""
        caller = self._caller(context)
        if caller.role == WATCHER and caller.execution_id != execution_id:
            raise ExecutionNotFound(execution_id)
        return caller.tenant
