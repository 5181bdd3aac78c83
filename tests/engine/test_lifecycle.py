"""The engine over real sockets, with a real pioneer and a real MongoDB wire-protocol server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_report_service_pb2 as sr
from pymongo import AsyncMongoClient

from discovery_client.requests import struct
from tests.stack import Stack, as_dict, error_info, running_attempt_token

SLEEP = {"handler": "sleep", "heartbeat_timeout_seconds": 5}


async def test_lifecycle_runs_steps_in_order_and_logs_everything(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "two steps",
        {"name": "wait", **SLEEP},
        {"name": "repeat", "handler": "echo"},
    )
    started = await c.start(workflow.workflow_id, {"seconds": 0.3, "echo": {"pages": 4}})
    assert started.status == ex_pb.EXECUTION_STATUS_RUNNING
    assert started.current_step.name == "wait" and started.current_step.order == 1

    items = [item async for item in c.watch(started.execution_id)]
    assert items[0].WhichOneof("item") == "snapshot"
    events = [i.event for i in items[1:]]
    assert [e.seq for e in events] == list(
        range(items[0].snapshot.last_seq + 1, events[-1].seq + 1)
    )
    kinds = [ex_pb.EventType.Name(e.type) for e in events]
    assert kinds[-1] == "EVENT_TYPE_WORKFLOW_COMPLETED"
    assert "EVENT_TYPE_STEP_PROGRESS" in kinds

    final = await c.get(started.execution_id)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert final.progress.percentage == 100.0 and final.progress.is_completed
    assert final.progress.completed_steps == 2 and not final.HasField("current_step")
    history = final.steps_history
    assert [(a.step_name, a.attempt, a.status) for a in history] == [
        ("wait", 1, ex_pb.ATTEMPT_STATUS_SUCCESS),
        ("repeat", 1, ex_pb.ATTEMPT_STATUS_SUCCESS),
    ]
    assert history[0].duration_seconds >= 0.3
    # The second step received the first one's output through the context.
    assert as_dict(final.dynamic_properties)["pages"] == 4
    assert as_dict(history[1].input_payload)["seconds"] == 0.3

    steps = await c.executions.ListExecutionSteps(
        es.ListExecutionStepsRequest(execution_id=started.execution_id)
    )
    assert [(s.name, s.state, len(s.attempts)) for s in steps.steps] == [
        ("wait", "success", 1),
        ("repeat", "success", 1),
    ]
    listed = await c.executions.ListExecutions(es.ListExecutionsRequest(page_size=10))
    assert [e.execution_id for e in listed.executions] == [started.execution_id]
    # A listing leaves the payloads behind but not what progress is computed from.
    summary = listed.executions[0]
    assert summary.progress.completed_steps == 2 and not summary.steps_history
    assert not summary.HasField("input")


async def test_failed_step_is_retried_with_backoff_then_fails_the_execution(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "fails",
        {
            "name": "broken",
            "handler": "fail",
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 0.2, "backoff_multiplier": 2},
        },
    )
    started = await c.start(workflow.workflow_id, {"message": "no such user"})
    final = await c.wait_terminal(started.execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_FAILED
    assert final.progress.is_failed and final.progress.failed_steps == 1
    attempts = final.steps_history
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert all(a.status == ex_pb.ATTEMPT_STATUS_FAILED for a in attempts)
    assert "no such user" in attempts[0].error.message
    # Backoff: 0.2 s then 0.4 s between the attempts.
    gap1 = attempts[1].start_time.ToDatetime() - attempts[0].finish_time.ToDatetime()
    gap2 = attempts[2].start_time.ToDatetime() - attempts[1].finish_time.ToDatetime()
    assert gap1.total_seconds() >= 0.2 and gap2.total_seconds() >= 0.4
    assert final.error.step_name == "broken"


async def test_step_over_its_timeout_is_timed_out(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "slow",
        {"name": "nap", **SLEEP, "timeout_seconds": 0.5, "retry": {"max_attempts": 1}},
    )
    started = await c.start(workflow.workflow_id, {"seconds": 30})
    final = await c.wait_terminal(started.execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_FAILED
    assert final.steps_history[0].status == ex_pb.ATTEMPT_STATUS_TIMED_OUT
    assert final.error.reason == "timeout"


async def test_with_no_runner_a_step_waits_queued_and_runs_once_one_polls(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "orphan",
        {
            "name": "nap",
            "handler": "sleep",
            "heartbeat_timeout_seconds": 0.6,
            "retry": {"max_attempts": 2, "initial_backoff_seconds": 0.1},
        },
    )
    await stack.pioneer.stop()  # nobody polls now
    started = await c.start(workflow.workflow_id, {"seconds": 0.2})
    # Well past the heartbeat timeout: waiting for a runner is not a failure.
    await asyncio.sleep(1.5)
    waiting = await c.get(started.execution_id)
    assert waiting.status == ex_pb.EXECUTION_STATUS_RUNNING
    assert [a.status for a in waiting.steps_history] == [ex_pb.ATTEMPT_STATUS_QUEUED]
    assert waiting.steps_history[0].HasField("queue_time")
    assert not waiting.steps_history[0].HasField("start_time")
    await stack.pioneer.start()
    final = await c.wait_terminal(started.execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    (attempt,) = final.steps_history
    assert attempt.status == ex_pb.ATTEMPT_STATUS_SUCCESS
    assert attempt.runner_id == stack.pioneer.name
    queued_for = attempt.start_time.ToDatetime() - attempt.queue_time.ToDatetime()
    assert queued_for.total_seconds() >= 1.5
    # The run time counts from the start, not from the queue.
    assert 0.2 <= attempt.duration_seconds < 1.5
    events = await c.events(started.execution_id)
    types = [e.type for e in events if e.type != ex_pb.EVENT_TYPE_STEP_PROGRESS]
    assert types == [
        ex_pb.EVENT_TYPE_WORKFLOW_STARTED,
        ex_pb.EVENT_TYPE_STEP_QUEUED,
        ex_pb.EVENT_TYPE_STEP_STARTED,
        ex_pb.EVENT_TYPE_STEP_FINISHED,
        ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED,
    ]


async def test_a_schedule_to_start_timeout_fails_a_step_nobody_takes(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "impatient",
        {
            "name": "nap",
            "handler": "sleep",
            "schedule_to_start_timeout_seconds": 0.5,
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 0.1},
        },
    )
    assert workflow.steps[0].schedule_to_start_timeout_seconds == 0.5
    await stack.pioneer.stop()
    try:
        started = await c.start(workflow.workflow_id, {"seconds": 0.1})
        final = await c.wait_terminal(started.execution_id, 20)
    finally:
        await stack.pioneer.start()
    assert final.status == ex_pb.EXECUTION_STATUS_FAILED
    # Not retried: another attempt would wait in the same queue.
    assert [a.status for a in final.steps_history] == [ex_pb.ATTEMPT_STATUS_TIMED_OUT]
    assert final.error.reason == "schedule_to_start_timeout"
    assert final.steps_history[0].duration_seconds == 0


async def test_cancel_stops_the_running_step(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("long", {"name": "nap", **SLEEP})
    started = await c.start(workflow.workflow_id, {"seconds": 60})
    runner = stack.pioneer.runner
    assert runner is not None
    for _ in range(100):
        if runner.running_count:
            break
        await asyncio.sleep(0.05)
    assert runner.running_count == 1
    reply = await c.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=started.execution_id, reason="user asked")
    )
    assert reply.execution.status == ex_pb.EXECUTION_STATUS_CANCELLED
    assert reply.execution.steps_history[0].status == ex_pb.ATTEMPT_STATUS_CANCELLED
    for _ in range(100):
        if not runner.running_count:
            break
        await asyncio.sleep(0.05)
    assert runner.running_count == 0
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await c.executions.CancelExecution(
            es.CancelExecutionRequest(execution_id=started.execution_id)
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(again.value)[0] == "EXECUTION_TERMINAL"
    events = await c.events(started.execution_id)
    assert ex_pb.EventType.Name(events[-1].type) == "EVENT_TYPE_WORKFLOW_CANCELLED"


async def test_manual_mode_waits_for_advance(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow(
        "manual", {"name": "first", "handler": "echo"}, {"name": "second", "handler": "echo"}
    )
    started = await c.start(workflow.workflow_id, {"echo": {"a": 1}}, manual=True)
    assert started.status == ex_pb.EXECUTION_STATUS_WAITING
    assert started.current_step.name == "first"
    with pytest.raises(grpc.aio.AioRpcError):
        await c.executions.AdvanceExecution(es.AdvanceExecutionRequest(execution_id="nope"))
    advanced = await c.executions.AdvanceExecution(
        es.AdvanceExecutionRequest(execution_id=started.execution_id, data=struct({"ok": True}))
    )
    assert advanced.execution.status in (
        ex_pb.EXECUTION_STATUS_RUNNING,
        ex_pb.EXECUTION_STATUS_WAITING,
    )
    for _ in range(100):
        execution = await c.get(started.execution_id)
        if execution.status == ex_pb.EXECUTION_STATUS_WAITING and execution.current_step.order == 2:
            break
        await asyncio.sleep(0.05)
    assert execution.current_step.name == "second"
    assert as_dict(execution.dynamic_properties)["ok"] is True
    await c.executions.AdvanceExecution(
        es.AdvanceExecutionRequest(execution_id=started.execution_id)
    )
    final = await c.wait_terminal(started.execution_id, 10)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await c.executions.AdvanceExecution(
            es.AdvanceExecutionRequest(execution_id=started.execution_id)
        )
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_start_is_idempotent_by_request_id(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("idem", {"name": "e", "handler": "echo"})
    replies = await asyncio.gather(
        *(c.start(workflow.workflow_id, {"x": 1}, request_id="req-1") for _ in range(10))
    )
    assert len({r.execution_id for r in replies}) == 1
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await c.start(workflow.workflow_id, {"x": 2}, request_id="req-1")
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    reason, metadata, _ = error_info(conflict.value)
    assert reason == "IDEMPOTENCY_CONFLICT"
    assert metadata["execution_id"] == replies[0].execution_id
    listed = await c.executions.ListExecutions(es.ListExecutionsRequest())
    assert len(listed.executions) == 1


async def test_second_watcher_resumes_after_seq_with_the_exact_tail(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("watched", {"name": "nap", **SLEEP})
    started = await c.start(workflow.workflow_id, {"seconds": 1.0})
    full = await c.events(started.execution_id, 0)
    assert [e.seq for e in full] == list(range(1, len(full) + 1))
    for resume_at in (0, 2, len(full) // 2, len(full) - 1):
        tail = await c.events(started.execution_id, resume_at)
        assert tail == full[resume_at:]
    # A watcher that joins at the end gets the snapshot and nothing else.
    items = [i async for i in c.watch(started.execution_id)]
    assert len(items) == 1 and items[0].snapshot.last_seq == full[-1].seq
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await c.events(started.execution_id, len(full) + 5)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad.value)[2] == ["after_seq"]


async def test_live_watchers_see_identical_sequences(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("many", {"name": "nap", **SLEEP})
    started = await c.start(workflow.workflow_id, {"seconds": 1.0})
    results = await asyncio.gather(*(c.events(started.execution_id, 0) for _ in range(5)))
    assert all(r == results[0] for r in results)
    assert results[0][-1].seq == (await c.get(started.execution_id)).last_seq


async def test_stale_and_foreign_reports_are_refused_and_write_nothing(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("stale", {"name": "nap", **SLEEP})
    started = await c.start(workflow.workflow_id, {"seconds": 1.0})
    before = (await c.get(started.execution_id)).last_seq
    for call in (
        c.reports.CompleteStep(
            sr.CompleteStepRequest(
                execution_id=started.execution_id,
                step_name="nap",
                attempt_token="forged",
                success=True,
            )
        ),
        c.reports.ReportStepProgress(
            sr.ReportStepProgressRequest(
                execution_id=started.execution_id,
                step_name="nap",
                attempt_token="forged",
                progress=ex_pb.StepProgress(percentage=99),
            )
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(refused.value)[0] == "STALE_ATTEMPT"
    with pytest.raises(grpc.aio.AioRpcError) as unknown_step:
        await c.reports.CompleteStep(
            sr.CompleteStepRequest(
                execution_id=started.execution_id, step_name="other", attempt_token="x"
            )
        )
    assert unknown_step.value.code() == grpc.StatusCode.NOT_FOUND
    after = await c.get(started.execution_id)
    assert all(a.status != ex_pb.ATTEMPT_STATUS_SUCCESS for a in after.steps_history) or (
        after.last_seq > before
    )
    events = await c.events(started.execution_id, 0)
    finished = [e for e in events if ex_pb.EventType.Name(e.type) == "EVENT_TYPE_STEP_FINISHED"]
    assert len(finished) == 1 and as_dict(finished[0].data)["status"] == "success"


async def test_execute_workflow_waits_within_its_bound(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("sync", {"name": "nap", **SLEEP})
    quick = await c.executions.ExecuteWorkflow(
        es.ExecuteWorkflowRequest(
            workflow_id=workflow.workflow_id, input=struct({"seconds": 0.1}), wait_seconds=10
        )
    )
    assert quick.finished and quick.execution.status == ex_pb.EXECUTION_STATUS_COMPLETED
    slow = await c.executions.ExecuteWorkflow(
        es.ExecuteWorkflowRequest(
            workflow_id=workflow.workflow_id, input=struct({"seconds": 2}), wait_seconds=0.3
        )
    )
    assert not slow.finished and slow.execution.status == ex_pb.EXECUTION_STATUS_RUNNING
    rest = await c.events(slow.execution.execution_id, slow.execution.last_seq)
    assert rest[0].seq == slow.execution.last_seq + 1
    assert ex_pb.EventType.Name(rest[-1].type) == "EVENT_TYPE_WORKFLOW_COMPLETED"


async def test_large_input_is_kept_apart_as_a_blob(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("blob", {"name": "nap", **SLEEP})
    document = "JVBERi0xLjQK" * 50_000  # 600 KB of base64 text
    started = await c.start(workflow.workflow_id, {"base64": document, "seconds": 1.5})
    ref = as_dict(started.input)["base64"]
    assert ref["size_bytes"] == len(document)
    assert ref["sha256"] == hashlib.sha256(document.encode()).hexdigest()
    token = await running_attempt_token(stack, started.execution_id)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    try:
        db = client[stack.database]
        for doc in await db["events"].find({"execution_id": started.execution_id}).to_list():
            assert document not in str(doc)
        status_doc = await db["executions"].find_one({"_id": started.execution_id})
        assert document not in str(status_doc)
    finally:
        await client.close()
    chunks = c.reports.ReadBlob(
        sr.ReadBlobRequest(
            execution_id=started.execution_id, attempt_token=token, blob_id=ref["blob_id"]
        )
    )
    data = b"".join([m.chunk async for m in chunks])
    assert hashlib.sha256(data).hexdigest() == ref["sha256"]
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        async for _ in c.reports.ReadBlob(
            sr.ReadBlobRequest(
                execution_id=started.execution_id, attempt_token="x", blob_id=ref["blob_id"]
            )
        ):
            pass
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_errors_carry_reasons_and_fields(stack: Stack) -> None:
    c = stack.client
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await c.get("does-not-exist")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(missing.value)[0] == "EXECUTION_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as unknown_workflow:
        await c.start("nope")
    assert unknown_workflow.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as no_id:
        await c.get("")
    assert no_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(no_id.value)[2] == ["execution_id"]
    with pytest.raises(grpc.aio.AioRpcError) as bad_handler:
        await c.create_workflow("bad", {"name": "x", "handler": "no_such_handler"})
    assert bad_handler.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no_such_handler" in (bad_handler.value.details() or "")
    assert error_info(bad_handler.value)[2] == ["steps[0].handler"]
    with pytest.raises(grpc.aio.AioRpcError) as bad_page:
        await c.executions.ListExecutions(es.ListExecutionsRequest(page_token="garbage"))
    assert bad_page.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_running_step_can_store_a_blob_and_read_it_back(stack: Stack) -> None:
    c = stack.client
    workflow = await c.create_workflow("store", {"name": "nap", **SLEEP})
    started = await c.start(workflow.workflow_id, {"seconds": 2})
    token = await running_attempt_token(stack, started.execution_id)
    payload = bytes(range(256)) * 40_000  # 10 MB, several chunks

    async def parts(header_token: str, data: bytes) -> AsyncIterator[sr.WriteBlobRequest]:
        yield sr.WriteBlobRequest(
            header=sr.WriteBlobHeader(execution_id=started.execution_id, attempt_token=header_token)
        )
        for offset in range(0, len(data), 1 << 20):
            yield sr.WriteBlobRequest(chunk=data[offset : offset + (1 << 20)])

    ref = await c.reports.WriteBlob(parts(token, payload))
    assert ref.size_bytes == len(payload)
    assert ref.sha256 == hashlib.sha256(payload).hexdigest()
    back = c.reports.ReadBlob(
        sr.ReadBlobRequest(
            execution_id=started.execution_id, attempt_token=token, blob_id=ref.blob_id
        )
    )
    assert b"".join([m.chunk async for m in back]) == payload
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        # Header only: a server that refuses early races a client still sending chunks.
        await c.reports.WriteBlob(parts("forged", b""))
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
