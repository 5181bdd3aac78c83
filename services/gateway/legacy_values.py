"""Times and free-form data as the legacy JSON shapes spell them (CONTRACT.md).

Times are ISO 8601 UTC with `Z` and millisecond precision. Free-form data travels through
the engine as `google.protobuf.Struct`, whose numbers are all doubles: a whole number comes
back here as the integer a client sent.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

# Whole doubles up to 2**53 are exact integers; beyond that a float is the honest value.
_EXACT = 2**53


def iso(value: timestamp_pb2.Timestamp | datetime | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, timestamp_pb2.Timestamp):
        if value.seconds == 0 and value.nanos == 0:
            return None
        value = value.ToDatetime(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> datetime:
    return datetime.now(UTC)


def now_iso() -> str:
    stamp = iso(utc_now())
    assert stamp is not None
    return stamp


def plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return plain_struct(value.struct_value)
    if kind == "list_value":
        return [plain(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            return None  # JSON has no spelling for it; the engine never stores one
        if number.is_integer() and abs(number) <= _EXACT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def plain_struct(message: struct_pb2.Struct) -> dict[str, Any]:
    return {key: plain(item) for key, item in message.fields.items()}
