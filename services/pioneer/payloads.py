"""The seed's dict bodies, checked and turned into protobuf messages (and Structs back into dicts).

A progress body is `{"percentage", "message", "current_task", "estimated_remaining_seconds",
"custom_data"}`; a completion body is `{"success": bool, …result fields…}`. Every check raises
ValueError naming the offending field, so a step author sees the mistake at the call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from discovery.engine.v1.execution_pb2 import StepError, StepProgress
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

PROGRESS_FIELDS = frozenset(
    {"percentage", "message", "current_task", "estimated_remaining_seconds", "custom_data"}
)


@dataclass(frozen=True)
class Outcome:
    """What CompleteStep carries besides the attempt's identity."""

    success: bool
    result: Struct
    error: StepError | None


def struct_from_dict(data: Mapping[str, Any], field: str) -> Struct:
    try:
        return json_format.ParseDict(dict(data), Struct())
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{field}: not JSON-like data ({exc})") from None


def dict_from_struct(struct: Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def progress_from_body(body: object) -> StepProgress:
    mapping = _mapping(body, "progress")
    unknown = sorted(set(mapping) - PROGRESS_FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0]}: not a progress field (expected {sorted(PROGRESS_FIELDS)})")
    if "percentage" not in mapping:
        raise ValueError("percentage: required, a number from 0 to 100")
    progress = StepProgress(percentage=_number(mapping["percentage"], "percentage", high=100.0))
    for field in ("message", "current_task"):
        value = mapping.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{field}: expected a string, got {type(value).__name__}")
        setattr(progress, field, value)
    eta = mapping.get("estimated_remaining_seconds")
    if eta is not None:
        progress.estimated_remaining_seconds = _number(eta, "estimated_remaining_seconds")
    custom = mapping.get("custom_data")
    if custom is not None:
        progress.custom_data.CopyFrom(
            struct_from_dict(_mapping(custom, "custom_data"), "custom_data")
        )
    return progress


def outcome_from_body(body: object) -> Outcome:
    """A completion body: `success` picks the outcome; every key, `success` included, is the
    result, so the step's output payload shows it as the seed's clients expect."""
    mapping = _mapping(body, "completion")
    success = mapping.get("success")
    if not isinstance(success, bool):
        raise ValueError("success: required, true or false")
    result = struct_from_dict(mapping, "result")
    return Outcome(success, result, None if success else _error_from_body(mapping.get("error")))


def failure(reason: str, type_name: str, message: str) -> Outcome:
    return Outcome(
        success=False,
        result=struct_from_dict({"success": False, "error": message}, "result"),
        error=StepError(reason=reason, type=type_name, message=message),
    )


def _error_from_body(error: object) -> StepError:
    """`error` in a failed completion body: a message, or `{"type", "message"}`."""
    if error is None:
        return StepError(reason="step_failed")
    if isinstance(error, str):
        return StepError(reason="step_failed", message=error)
    details = _mapping(error, "error")
    type_name = details.get("type", "")
    message = details.get("message", "")
    if not isinstance(type_name, str) or not isinstance(message, str):
        raise ValueError("error: type and message must be strings")
    return StepError(reason="step_failed", type=type_name, message=message)


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}: expected a dict, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"{field}: keys must be strings, got {key!r}")
    return value


def _number(value: object, field: str, *, high: float = math.inf) -> float:
    # bool is an int to Python, never a percentage to a reader.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= high:
        bound = f"from 0 to {high:g}" if math.isfinite(high) else "0 or more"
        raise ValueError(f"{field}: {value!r} is not a number {bound}")
    return number
