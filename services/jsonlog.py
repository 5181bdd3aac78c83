"""Structured logs for every service: one JSON object per line on stderr.

Call sites pass `extra={"execution_id": …, "step": …}`; those fields land as top-level keys,
so that one execution's or one step's lines can be found. Payloads, documents and tokens are
never passed to a log call.

Where a service works for one execution (an engine's change of it or call about it, a
gateway's request about it, pioneer's run of one of its attempts) it says so with `about` or
`bind`, and every line logged meanwhile carries its `execution_id`. A line logged inside a
trace carries its `trace_id` (32 hex digits), else that of the execution's start when it was
traced; an explicit `extra` wins over both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

# (execution_id, the trace id of its start or None) of the execution being worked for.
_execution: ContextVar[tuple[str, str | None] | None] = ContextVar("log_execution", default=None)


@contextlib.contextmanager
def about(execution_id: str, trace_id: str | None = None) -> Iterator[None]:
    """Every line logged inside carries `execution_id` (and, outside any span, `trace_id`:
    that of the execution's start)."""
    token = _execution.set((execution_id, trace_id))
    try:
        yield
    finally:
        # A coroutine dropped while pending is closed by the garbage collector, outside the
        # context it set: nothing of it is left to undo there.
        with contextlib.suppress(ValueError):
            _execution.reset(token)


def bind(execution_id: str, trace_id: str | None = None) -> None:
    """`about` for the rest of the current task: for a task that serves one execution and
    ends with it (an RPC's own task)."""
    _execution.set((execution_id, trace_id))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        extra = {key: value for key, value in vars(record).items() if key not in _STANDARD}
        bound = _execution.get()
        if bound is not None:
            line["execution_id"] = bound[0]
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = f"{span.trace_id:032x}"
        elif bound is not None and bound[1] and extra.get("execution_id", bound[0]) == bound[0]:
            line["trace_id"] = bound[1]
        line.update(extra)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure(service: str) -> None:
    """JSON lines on stderr, at DISCOVERY_LOG_LEVEL (debug, info or warning; info unset)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    raw = os.environ.get("DISCOVERY_LOG_LEVEL", "").strip().lower()
    root.setLevel(LEVELS.get(raw, logging.INFO))
    if raw and raw not in LEVELS:
        root.warning("DISCOVERY_LOG_LEVEL=%r is not one of %s: info", raw, ", ".join(LEVELS))
