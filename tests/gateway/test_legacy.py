"""Engine messages in the legacy shapes: names, times, numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from discovery.engine.v1 import execution_pb2 as ex_pb
from google.protobuf import struct_pb2, timestamp_pb2

from services.gateway import legacy


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def test_events_flatten_their_data_under_the_legacy_names() -> None:
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(datetime(2025, 8, 22, 10, 30, 0, 123456, tzinfo=UTC))
    message = ex_pb.ExecutionEvent(
        execution_id="e1",
        seq=7,
        type=ex_pb.EVENT_TYPE_STEP_PROGRESS,
        time=time,
        data=_struct(
            {
                "step_name": "fetch_user",
                "attempt": 1,
                "seq": 99,  # never overrides the header
                "progress": {"percentage": 50, "custom_data": {"pages": 5, "ratio": 0.25}},
            }
        ),
    )
    assert legacy.event(message) == {
        "event": "step_progress",
        "execution_id": "e1",
        "seq": 7,
        "timestamp": "2025-08-22T10:30:00.123Z",
        "step_name": "fetch_user",
        "attempt": 1,
        "progress": {"percentage": 50, "custom_data": {"pages": 5, "ratio": 0.25}},
    }
    data = legacy.event(message)
    assert isinstance(data["progress"]["percentage"], int)
    assert isinstance(data["attempt"], int)


def test_numbers_beyond_exact_doubles_stay_floats() -> None:
    value = struct_pb2.Value(number_value=2.0**60)
    assert isinstance(legacy.plain(value), float)
    assert legacy.plain(struct_pb2.Value(number_value=float("nan"))) is None


def test_unset_times_are_null_and_set_ones_end_in_z() -> None:
    assert legacy.iso(timestamp_pb2.Timestamp()) is None
    assert legacy.iso(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02T03:04:05.000Z"


def test_status_names_are_the_lower_case_suffixes() -> None:
    assert legacy.execution_status(ex_pb.EXECUTION_STATUS_WAITING) == "waiting"
    assert legacy.attempt_status(ex_pb.ATTEMPT_STATUS_TIMED_OUT) == "timed_out"
    assert legacy.event_name(ex_pb.EVENT_TYPE_WORKFLOW_FAILED) == "workflow_failed"
    assert legacy.event_name(999) == "event_type_999"
