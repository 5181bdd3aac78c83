"""Engine messages in the legacy shapes: names, times, numbers."""

from __future__ import annotations

from datetime import UTC, datetime

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_queue_service_pb2 as sq
from google.protobuf import struct_pb2, timestamp_pb2

from discovery_client.requests import struct
from services.gateway import legacy, legacy_step_queue, legacy_values


def _stamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def test_events_flatten_their_data_under_the_legacy_names() -> None:
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(datetime(2025, 8, 22, 10, 30, 0, 123456, tzinfo=UTC))
    message = ex_pb.ExecutionEvent(
        execution_id="e1",
        seq=7,
        type=ex_pb.EVENT_TYPE_STEP_PROGRESS,
        time=time,
        data=struct(
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
    assert isinstance(legacy_values.plain(value), float)
    assert legacy_values.plain(struct_pb2.Value(number_value=float("nan"))) is None


def test_unset_times_are_null_and_set_ones_end_in_z() -> None:
    assert legacy_values.iso(timestamp_pb2.Timestamp()) is None
    assert (
        legacy_values.iso(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02T03:04:05.000Z"
    )


def test_status_names_are_the_lower_case_suffixes() -> None:
    assert legacy.execution_status(ex_pb.EXECUTION_STATUS_WAITING) == "waiting"
    assert legacy.attempt_status(ex_pb.ATTEMPT_STATUS_TIMED_OUT) == "timed_out"
    assert legacy.event_name(ex_pb.EVENT_TYPE_WORKFLOW_FAILED) == "workflow_failed"
    assert legacy.event_name(999) == "event_type_999"


def test_a_queued_attempt_has_its_queue_time_and_no_start() -> None:
    queued = ex_pb.StepAttempt(
        step_name="nap",
        order=1,
        attempt=2,
        status=ex_pb.ATTEMPT_STATUS_QUEUED,
        queue_time=_stamp(datetime(2025, 8, 22, 10, 30, 0, tzinfo=UTC)),
    )
    entry = legacy.history_entry(queued)
    assert entry["status"] == "queued"
    assert entry["queued_at"] == "2025-08-22T10:30:00.000Z"
    assert entry["started_at"] is None and entry["finished_at"] is None
    assert entry["duration_seconds"] is None and entry["output_payload"] is None
    assert entry["runner_id"] is None
    queued.status = ex_pb.ATTEMPT_STATUS_RUNNING
    queued.start_time.CopyFrom(_stamp(datetime(2025, 8, 22, 10, 30, 4, tzinfo=UTC)))
    queued.runner_id = "pioneer@host:1"
    entry = legacy.history_entry(queued)
    assert entry["status"] == "running" and entry["runner_id"] == "pioneer@host:1"
    assert entry["started_at"] == "2025-08-22T10:30:04.000Z"


def test_the_queue_in_its_rest_shape_counts_the_oldest_wait_at_now() -> None:
    oldest = _stamp(datetime(2025, 8, 22, 10, 30, 0, tzinfo=UTC))
    polled = _stamp(datetime(2025, 8, 22, 10, 30, 9, 500000, tzinfo=UTC))
    answer = sq.GetStepQueueResponse(
        tenant=[sq.QueueDepth(handler="sleep", tenant="acme", ready=2, oldest_queue_time=oldest)],
        total=[sq.QueueDepth(handler="sleep", ready=5, oldest_queue_time=oldest)],
        runners=[
            sq.QueueRunner(
                runner_id="pioneer@a:1",
                handlers=["echo", "sleep"],
                free_slots=3,
                last_poll_time=polled,
            )
        ],
    )
    now = datetime(2025, 8, 22, 10, 30, 12, 250000, tzinfo=UTC)
    depth = {
        "handler": "sleep",
        "ready": 2,
        "oldest_queued_at": "2025-08-22T10:30:00.000Z",
        "oldest_wait_seconds": 12.25,
    }
    assert legacy_step_queue.step_queue(answer, now) == {
        "tenant": [depth],
        "total": [{**depth, "ready": 5}],
        "runners": [
            {
                "runner_id": "pioneer@a:1",
                "handlers": ["echo", "sleep"],
                "free_slots": 3,
                "last_poll_at": "2025-08-22T10:30:09.500Z",
            }
        ],
    }
    assert legacy.attempt_status(ex_pb.ATTEMPT_STATUS_QUEUED) == "queued"
    assert legacy.event_name(ex_pb.EVENT_TYPE_STEP_QUEUED) == "step_queued"


def test_a_run_without_a_current_step_stands_at_its_last_attempt_or_its_first_step() -> None:
    steps = [
        es.ExecutionStep(step_id=f"id-{n}", name=name, order=n)
        for n, name in enumerate(("Cargar", "Validar", "Finalizar"), start=1)
    ]
    not_started = ex_pb.Execution(execution_id="e", status=ex_pb.EXECUTION_STATUS_PENDING)
    assert legacy.standing_step(not_started, steps) == {"id": "id-1", "name": "Cargar", "order": 1}
    failed = ex_pb.Execution(
        execution_id="e",
        status=ex_pb.EXECUTION_STATUS_FAILED,
        steps_history=[
            ex_pb.StepAttempt(step_name="Cargar", order=1, attempt=1),
            ex_pb.StepAttempt(step_name="Validar", order=2, attempt=1),
            ex_pb.StepAttempt(step_name="Validar", order=2, attempt=2),
        ],
    )
    assert legacy.standing_step(failed, steps) == {"id": "id-2", "name": "Validar", "order": 2}
    assert legacy.standing_step(not_started, []) is None  # a workflow without steps
