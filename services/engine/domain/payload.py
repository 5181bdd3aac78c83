"""Checks on the free-form JSON a client or a step sends: size, depth and key names.

Run before anything is stored, so that a payload the database would refuse never reaches
the event log, where it would turn into an error on every retry.
"""

from __future__ import annotations

import json
import math
from typing import Any

from services.engine.domain.errors import InvalidArgument

MAX_DEPTH = 32


def check_payload(value: dict[str, Any], field: str, max_bytes: int) -> None:
    _check(value, field, 0)
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > max_bytes:
        raise InvalidArgument(field, f"{size} bytes, more than the {max_bytes} allowed")


def _check(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgument(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "\x00" in key or "." in key:
                raise InvalidArgument(
                    f"{where}.{key}", "keys may not start with '$' or hold '.' or NUL"
                )
            _check(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(where, "numbers must be finite")


def check_progress(progress: dict[str, Any], max_custom_bytes: int) -> None:
    """A step's progress body: {"percentage", "message", "current_task",
    "estimated_remaining_seconds", "custom_data"}."""
    percentage = progress.get("percentage", 0.0)
    if not isinstance(percentage, (int, float)) or not 0.0 <= percentage <= 100.0:
        raise InvalidArgument("progress.percentage", "must be a number from 0 to 100")
    for key, limit in (("message", 2000), ("current_task", 500)):
        text = progress.get(key, "")
        if not isinstance(text, str) or len(text) > limit:
            raise InvalidArgument(f"progress.{key}", f"must be text of at most {limit} characters")
    eta = progress.get("estimated_remaining_seconds")
    if eta is not None and (not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0):
        raise InvalidArgument("progress.estimated_remaining_seconds", "must be a number >= 0")
    custom = progress.get("custom_data") or {}
    if not isinstance(custom, dict):
        raise InvalidArgument("progress.custom_data", "must be an object")
    check_payload(custom, "progress.custom_data", max_custom_bytes)
