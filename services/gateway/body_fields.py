"""Typed readers of a JSON body's fields, shared by the checks of every route's body
(route_bodies.py).

Every refusal names the field (`details.field`): 422 for a wrong type, a missing or unknown
field or a bad value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from services.gateway.errors import ValidationFailed


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def body_object(value: object, field: str = "(body)") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationFailed(field, f"expected a JSON object, got {type_name(value)}")
    return value


def known(value: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValidationFailed(
            f"{where}{unknown[0]}",
            f"unknown field (expected some of: {', '.join(sorted(allowed))})",
        )


def string(value: object, field: str, *, max_chars: int, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(field, f"expected a string, got {type_name(value)}")
    if required and not value:
        raise ValidationFailed(field, "required, must not be empty")
    if len(value) > max_chars:
        raise ValidationFailed(field, f"at most {max_chars} characters")
    return value


def number(value: object, field: str, *, low: float = 0.0, high: float = math.inf) -> float:
    # bool is an int to Python, never a number to a reader.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(field, f"expected a number, got {type_name(value)}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        bound = f"from {low:g} to {high:g}" if math.isfinite(high) else f">= {low:g}"
        raise ValidationFailed(field, f"must be a number {bound}, got {value!r}")
    return number


def integer(value: object, field: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(field, f"expected an integer, got {type_name(value)}")
    if not low <= value <= high:
        raise ValidationFailed(field, f"must be an integer from {low} to {high}")
    return value


def boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationFailed(field, f"expected true or false, got {type_name(value)}")
    return value
