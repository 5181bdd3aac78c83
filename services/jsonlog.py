"""Structured logs for every service: one JSON object per line on stderr.

Call sites pass `extra={"execution_id": …, "step": …}`; those fields land as top-level keys,
so that one execution's or one step's lines can be found. Payloads, documents and tokens are
never passed to a log call.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


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
        line.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
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
