"""The client library against a real engine: a run followed across an engine SIGKILL and
restart, each event once; the engine's refusals with their reason and fields; and the library
importable without the services."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import workflow_pb2 as wf_pb

from discovery_client import AsyncClient, Client, EngineError, Resumed, Settings
from tests.stack import Client as StackClient
from tests.stack import EngineProcess, Stack, token

ROOT = Path(__file__).resolve().parents[2]
STEP = {"handler": "sleep", "heartbeat_timeout_seconds": 5, "retry": {"max_attempts": 2}}


async def test_watch_follows_a_run_across_an_engine_restart_each_event_once(
    restartable: tuple[EngineProcess, StackClient],
) -> None:
    engine, stack_client = restartable
    workflow = await stack_client.create_workflow(
        "restart", {"name": "a", **STEP}, {"name": "b", **STEP}
    )
    resumes: list[Resumed] = []
    async with AsyncClient(Settings(stack_client.target, token())) as client:
        started = await client.start_execution(
            workflow.workflow_id, {"seconds": 1.2}, request_id=str(uuid.uuid4())
        )
        execution_id = started.execution.execution_id
        assert started.watch_token

        items: list[ex_pb.Execution | ex_pb.ExecutionEvent] = []
        killed = False
        async for item in client.watch(execution_id, on_resume=resumes.append):
            items.append(item)
            if not killed and isinstance(item, ex_pb.ExecutionEvent) and item.seq >= 4:
                engine.kill()  # mid-run: the first step is running or just done
                killed = True
                await asyncio.sleep(0.8)  # the watch retries against a dead port meanwhile
                engine.start()

    snapshot, *events = items
    assert isinstance(snapshot, ex_pb.Execution)
    seqs = [event.seq for event in events if isinstance(event, ex_pb.ExecutionEvent)]
    assert seqs == list(range(snapshot.last_seq + 1, snapshot.last_seq + 1 + len(seqs)))
    last = events[-1]
    assert (
        isinstance(last, ex_pb.ExecutionEvent) and last.type == ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED
    )
    stored = await stack_client.events(execution_id, snapshot.last_seq)
    assert seqs == [event.seq for event in stored]
    assert killed and any(r.reason == "UNAVAILABLE" and r.delay_seconds > 0 for r in resumes)


async def test_refusals_carry_the_engines_reason_and_the_fields_at_fault(stack: Stack) -> None:
    def refusals() -> tuple[EngineError, EngineError]:
        with Client(Settings(stack.client.target, token())) as client:
            with pytest.raises(EngineError) as unknown:
                client.start_execution(str(uuid.uuid4()), {})
            bad = wf_pb.Workflow(name="no steps")
            with pytest.raises(EngineError) as invalid:
                client.create_workflow(bad)
        return unknown.value, invalid.value

    unknown, invalid = await asyncio.to_thread(refusals)

    assert unknown.code is grpc.StatusCode.NOT_FOUND
    assert unknown.reason == "WORKFLOW_NOT_FOUND"
    assert invalid.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in invalid.violations] == ["steps"]
    assert "steps" in invalid.describe()


async def test_a_wrong_token_is_unauthenticated_and_a_dead_engine_unreachable(
    stack: Stack,
) -> None:
    async with AsyncClient(Settings(stack.client.target, "not-a-token")) as client:
        with pytest.raises(EngineError) as refused:
            await client.get_execution(str(uuid.uuid4()))
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED

    async with AsyncClient(Settings("127.0.0.1:1", token(), timeout_seconds=1)) as client:
        with pytest.raises(EngineError) as away:
            await client.get_execution(str(uuid.uuid4()))
        assert not await client.serving(0.5)
    assert away.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "127.0.0.1:1" in away.value.describe()


def test_the_library_imports_nothing_of_the_services() -> None:
    """What a user's own service installs: the library and the generated messages only."""
    check = (
        "import sys, discovery_client\n"
        "leaked = sorted(m for m in sys.modules if m == 'services' or m.startswith('services.'))\n"
        "assert not leaked, leaked\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'generated'}"}
    subprocess.run([sys.executable, "-c", check], check=True, cwd=ROOT, env=env, timeout=60)


async def test_lists_page_through_workflows_oldest_first_and_executions_newest_first(
    stack: Stack,
) -> None:
    nap = {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
    made = [(await stack.client.create_workflow(f"w{i}", nap)).workflow_id for i in range(5)]
    async with AsyncClient(Settings(stack.client.target, token())) as client:
        started = [
            (await client.start_execution(made[0], {"seconds": 0}, manual=True)).execution
            for _ in range(5)
        ]
        workflows, executions, token_ = [], [], ""
        while True:
            page = await client.list_workflows(page_size=2, page_token=token_)
            assert len(page.workflows) <= 2
            workflows += [w.workflow_id for w in page.workflows]
            if not (token_ := page.next_page_token):
                break
        while True:
            listed = await client.list_executions(
                workflow_id=made[0], page_size=2, page_token=token_
            )
            executions += [e.execution_id for e in listed.executions]
            if not (token_ := listed.next_page_token):
                break

    assert workflows[-5:] == made
    assert executions == [e.execution_id for e in reversed(started)]
