"""Counts every call in flight against its pool (services/engine/quotas.py) and refuses one
over it with RESOURCE_EXHAUSTED naming the quota, before the servicer runs.

Which pool is the verified principal's: a runner's calls go to the runners' pool, anyone
else's to its tenant's (long or unary) and the clients' pool. The gateway calls with its
caller's own token, and its shared feeds with a watcher token of the tenant they serve, so
what the gateway does for a client counts against that client's tenant. Health checks carry
no credentials: they share the health pool. A call holds its place until it ends, however it
ends (the context's done callback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc_interceptor.server import AsyncServerInterceptor

from services.auth import RUNNER, TokenAuthority
from services.engine.quotas import CallQuotas
from services.grpc_auth import HEALTH, REFLECTION, principal

_EXECUTIONS = "/discovery.engine.v1.ExecutionService/"
# Calls that may last as long as an execution does: a watch, a sync execute's bounded wait,
# and a reflection stream (which a client keeps open as long as it likes).
LONG_CALLS = frozenset(
    {_EXECUTIONS + "WatchExecution", _EXECUTIONS + "ExecuteWorkflow", REFLECTION}
)


class CallQuotaInterceptor(AsyncServerInterceptor):
    """Runs after the AuthInterceptor: every call that reaches it (but health) is verified."""

    def __init__(self, authority: TokenAuthority, quotas: CallQuotas) -> None:
        self._authority = authority
        self._quotas = quotas

    def _admit(self, method_name: str, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        quotas = self._quotas
        if method_name in HEALTH:
            return quotas.admit_shared(quotas.health_calls)
        caller = principal(context, self._authority)
        if caller.role == RUNNER:
            return quotas.admit_shared(quotas.runner_calls)
        return quotas.admit_client(caller.tenant, long=method_name in LONG_CALLS)

    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        release = self._admit(method_name, context)  # QuotaExceeded: the ErrorInterceptor's
        context.add_done_callback(lambda _: release())
        response = method(request_or_iterator, context)
        if hasattr(response, "__aiter__"):
            return response
        return await response
