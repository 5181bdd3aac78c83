"""Steps run through pioneer's gRPC API, reporting to a fake engine over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import time

import grpc
import pytest
from discovery.pioneer.v1 import step_runner_service_pb2 as runner_pb2
from google.protobuf import json_format

from tests.pioneer.fake_engine import FakeEngine
from tests.pioneer.handlers import BAD_PROGRESS_BODIES
from tests.pioneer.harness import Pioneer

pytestmark = pytest.mark.timeout(15)


async def test_sleep_reports_progress_then_completes(pioneer: Pioneer, engine: FakeEngine) -> None:
    request = await pioneer.start("sleep", {"seconds": 0.6})
    completion = await engine.completion(request.attempt_token)

    progress = engine.progress(request.attempt_token)
    assert len(progress) >= 2
    percentages = [p.percentage for p in progress]
    assert percentages == sorted(percentages)
    assert percentages[-1] == pytest.approx(100.0)
    assert all(p.HasField("estimated_remaining_seconds") for p in progress)
    assert progress[0].estimated_remaining_seconds > progress[-1].estimated_remaining_seconds
    assert completion.success
    assert json_format.MessageToDict(completion.result) == {
        "success": True,
        "slept_seconds": 0.6,
    }


async def test_fail_reports_failure_with_type_and_message(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    request = await pioneer.start("fail", {"message": "no such document"})
    completion = await engine.completion(request.attempt_token)

    assert not completion.success
    assert completion.error.reason == "step_failed"
    assert completion.error.type == "StepFailure"
    assert completion.error.message == "no such document"


@pytest.mark.parametrize(
    ("handler", "error_type"), [("raise_key_error", "KeyError"), ("return_number", "TypeError")]
)
async def test_a_broken_handler_fails_its_step_and_pioneer_runs_the_next(
    pioneer: Pioneer, engine: FakeEngine, handler: str, error_type: str
) -> None:
    broken = await pioneer.start(handler)
    failed = await engine.completion(broken.attempt_token)
    assert not failed.success
    assert failed.error.type == error_type

    following = await pioneer.start("echo", {"echo": {"still": "alive"}})
    completion = await engine.completion(following.attempt_token)
    assert completion.success
    assert json_format.MessageToDict(completion.result) == {"success": True, "still": "alive"}


async def test_a_quiet_step_is_kept_alive_by_heartbeats(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    request = await pioneer.start("quiet", {"seconds": 0.6}, heartbeat_timeout=0.3)
    completion = await engine.completion(request.attempt_token)

    assert completion.success
    # A heartbeat every 0.1 s over 0.6 s; a few may be late on a busy machine.
    assert len(engine.heartbeats(request.attempt_token)) >= 3
    assert engine.progress(request.attempt_token) == []


async def test_a_step_over_its_timeout_fails_with_reason_timeout(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    started = time.monotonic()
    request = await pioneer.start("quiet", {"seconds": 30}, step_timeout=0.3)
    completion = await engine.completion(request.attempt_token)

    assert time.monotonic() - started < 2
    assert not completion.success
    assert completion.error.reason == "timeout"
    await pioneer.idle()


async def test_cancel_step_stops_a_running_sleep_and_nothing_is_reported_after(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    request = await pioneer.start("sleep", {"seconds": 30})
    token = request.attempt_token
    await engine.wait_for(lambda: bool(engine.progress(token)))

    await pioneer.stub.CancelStep(
        runner_pb2.CancelStepRequest(
            execution_id=request.execution_id, step_name=request.step_name, attempt_token=token
        ),
        timeout=5,
    )
    await pioneer.idle(within=0.5)
    calls_after_cancel = engine.calls(token)
    await asyncio.sleep(0.4)  # more than one progress interval of `sleep`

    assert engine.calls(token) == calls_after_cancel
    assert engine.completions(token) == []


async def test_cancel_requested_in_a_progress_reply_stops_the_step(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    request = await pioneer.start("sleep", {"seconds": 30})
    token = request.attempt_token
    await engine.wait_for(lambda: bool(engine.progress(token)))

    engine.script.cancel_tokens.add(token)
    await pioneer.idle(within=1.0)
    calls_after_cancel = engine.calls(token)
    await asyncio.sleep(0.4)

    assert engine.calls(token) == calls_after_cancel
    assert engine.completions(token) == []


async def test_a_stale_token_stops_the_step_without_completing_it(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    token = "stale-token"
    engine.script.stale_tokens.add(token)
    await pioneer.start("sleep", {"seconds": 30}, token=token)

    await engine.wait_for(lambda: engine.calls(token) > 0)
    await pioneer.idle(within=1.0)
    await asyncio.sleep(0.3)

    assert engine.calls(token) == 1
    assert engine.complete_calls == []


async def test_a_completion_is_retried_through_unavailable_and_delivered_once(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    engine.script.complete_errors = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    request = await pioneer.start("echo", {"echo": "hello"})
    completion = await engine.completion(request.attempt_token)
    await pioneer.idle()

    assert completion.success
    assert [call.refused_with for call in engine.complete_calls] == [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAVAILABLE,
        None,
    ]


async def test_start_step_twice_with_one_token_runs_the_step_once(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    request = await pioneer.start("echo", {"echo": 1})
    await pioneer.stub.StartStep(request, timeout=5)
    await engine.completion(request.attempt_token)
    await pioneer.idle()
    # Once more after the attempt has ended: still the same attempt, not a new run.
    await pioneer.stub.StartStep(request, timeout=5)
    await asyncio.sleep(0.2)

    assert len(engine.completions(request.attempt_token)) == 1
    assert pioneer.runner.running_count == 0


async def test_progress_does_not_wait_for_the_engine_and_arrives_in_order_before_the_end(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    engine.script.progress_delay_seconds = 0.3  # a slow database
    request = await pioneer.start("burst", {"count": 40})
    completion = await engine.completion(request.attempt_token)

    result = json_format.MessageToDict(completion.result)
    assert result["longest_report_seconds"] < 0.1, "report_progress waited for the engine"
    reports = engine.progress(request.attempt_token)
    assert [r.percentage for r in reports] == list(range(1, 41))
    # What piled up while a call was in flight went in one call (or with the completion).
    assert len(engine.progress_calls) < 5
    # The completion was sent once every progress call before it had been answered.
    assert engine.order[-1] == "complete" and engine.order.count("complete") == 1


async def test_a_step_reporting_to_a_slow_engine_keeps_its_heartbeat_and_its_reports(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    # Each call takes longer than a heartbeat interval (0.1 s): the reports in flight are
    # the heartbeat, and the step goes on meanwhile.
    engine.script.progress_delay_seconds = 0.25
    request = await pioneer.start("steady", {"seconds": 1.0}, heartbeat_timeout=0.3)
    completion = await engine.completion(request.attempt_token)

    sent = int(json_format.MessageToDict(completion.result)["reports"])
    assert sent >= 10
    assert [r.percentage for r in engine.progress(request.attempt_token)] == list(
        range(1, sent + 1)
    )


async def test_the_seeds_calls_work_inside_a_step(pioneer: Pioneer, engine: FakeEngine) -> None:
    request = await pioneer.start("fetch_user")
    completion = await engine.completion(request.attempt_token)
    await pioneer.idle()

    [progress] = engine.progress(request.attempt_token)
    assert progress.percentage == 50
    assert progress.message == "Procesando documento..."
    assert progress.current_task == "Extrayendo texto"
    assert progress.estimated_remaining_seconds == 120
    assert json_format.MessageToDict(progress.custom_data) == {
        "pages_processed": 5,
        "total_pages": 10,
    }
    assert completion.success
    assert json_format.MessageToDict(completion.result) == {
        "success": True,
        "document_processed": True,
        "sections_found": 8,
        "pdf_uploaded": True,
    }
    # The handler reported its completion: pioneer does not report another one.
    assert len(engine.complete_calls) == 1


async def test_a_bad_progress_body_raises_value_error_naming_the_field(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    request = await pioneer.start("bad_progress")
    completion = await engine.completion(request.attempt_token)

    errors = json_format.MessageToDict(completion.result)["errors"]
    assert set(errors) == set(BAD_PROGRESS_BODIES)
    for field, message in errors.items():
        assert message.startswith(f"{field}:")
    assert engine.progress(request.attempt_token) == []


async def test_reporting_for_another_step_is_refused(pioneer: Pioneer, engine: FakeEngine) -> None:
    request = await pioneer.start("report_for_other_step")
    completion = await engine.completion(request.attempt_token)

    assert not completion.success
    assert completion.error.type == "NotInStep"
    assert "not_me" in completion.error.message
    assert engine.progress(request.attempt_token) == []


async def test_a_step_reads_a_blob_from_the_engine(pioneer: Pioneer, engine: FakeEngine) -> None:
    blob = bytes(range(256)) * 20
    engine.script.blobs["doc"] = blob
    request = await pioneer.start("read_blob", {"blob_id": "doc"})
    completion = await engine.completion(request.attempt_token)

    assert json_format.MessageToDict(completion.result) == {
        "success": True,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }


async def test_an_unknown_blob_fails_the_step_without_taking_it_for_stale(
    pioneer: Pioneer, engine: FakeEngine
) -> None:
    request = await pioneer.start("read_blob", {"blob_id": "nope"})
    completion = await engine.completion(request.attempt_token)

    assert not completion.success
    assert completion.error.type == "ReportRejected"
    assert "NOT_FOUND" in completion.error.message
