"""Every line logged while a call is served carries the execution its request names (its
`execution_id` field), so that one execution's lines are found whichever call wrote them
(services/jsonlog.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc_interceptor.server import AsyncServerInterceptor

from services import jsonlog


class LogContextInterceptor(AsyncServerInterceptor):
    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        execution_id = getattr(request_or_iterator, "execution_id", None)
        if isinstance(execution_id, str) and execution_id:
            # For the rest of the call: each call is served in a task of its own.
            jsonlog.bind(execution_id)
        response = method(request_or_iterator, context)
        if hasattr(response, "__aiter__"):
            return response
        return await response
