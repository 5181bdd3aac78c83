"""`discovery run|status|watch|cancel|advance` against a real engine and pioneer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import signal
import sys
import uuid
from pathlib import Path

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import workflow_pb2 as wf_pb
from google.protobuf import json_format

from tests.cli.cli import assert_readable_error, call_main, cli_env, run_cli
from tests.stack import ROOT, Stack, as_dict, watched


async def test_run_watch_shows_both_steps_to_100_percent_and_exits_0(
    target: str, two_naps: wf_pb.Workflow
) -> None:
    result = await run_cli(target, "run", "two naps", "--input", '{"seconds": 0.5}', "--watch")

    assert result.code == 0, result
    lines = result.out.splitlines()
    execution_id = lines[0].strip()
    assert uuid.UUID(execution_id)
    for step in ("first nap", "second nap"):
        assert any(step in line and "100%" in line for line in lines), result.out
        assert any(f"✓ {step} done" in line for line in lines), result.out
    assert lines[-1].startswith("✓ workflow completed")
    # Plain lines when stdout is not a terminal: no cursor movement, no colour.
    assert "\x1b[" not in result.out


async def test_a_failing_step_exits_1_with_the_error(stack: Stack, target: str) -> None:
    await stack.client.create_workflow(
        "doomed",
        {"name": "greet", "handler": "echo"},
        {"name": "explode", "handler": "fail", "retry": {"max_attempts": 1}},
    )

    result = await run_cli(
        target, "run", "doomed", "--input", '{"message": "the printer is on fire"}', "--watch"
    )

    assert result.code == 1, result
    assert "✓ greet done" in result.out
    assert "✗ explode failed" in result.out
    last = result.out.splitlines()[-1]
    assert "workflow failed" in last and "explode" in last, last
    assert "the printer is on fire" in last


async def test_watch_json_prints_every_seq_once_in_order(
    stack: Stack, target: str, two_naps: wf_pb.Workflow
) -> None:
    started = await stack.client.start(two_naps.workflow_id, {"seconds": 0.4})

    result = await run_cli(target, "watch", started.execution_id, "--json", "--after-seq", "0")

    assert result.code == 0, result
    events = result.json_lines()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    stored = await stack.client.events(started.execution_id, 0)
    assert seqs == [e.seq for e in stored]
    assert events[0]["event"] == "workflow_started"
    assert events[-1]["event"] == "workflow_completed"
    progress = [e for e in events if e["event"] == "step_progress"]
    assert progress and {"step_name", "order", "attempt", "progress"} <= progress[0]["data"].keys()
    assert progress[0]["data"]["order"] == 1  # a number as a number, not 1.0
    assert all(e["execution_id"] == started.execution_id and e["timestamp"] for e in events)


async def test_watch_json_without_after_seq_starts_with_a_snapshot(
    stack: Stack, target: str, two_naps: wf_pb.Workflow
) -> None:
    # The run waits for a runner until the CLI (a new interpreter) watches it.
    await stack.pioneer.stop()
    started = await stack.client.start(two_naps.workflow_id, {"seconds": 0.4})
    watching = asyncio.create_task(run_cli(target, "watch", started.execution_id, "--json"))
    await watched(stack, started.execution_id)
    await stack.pioneer.start()
    result = await watching

    assert result.code == 0, result
    snapshot, *events = result.json_lines()
    assert snapshot["event"] == "snapshot"
    assert snapshot["status"]["execution_id"] == started.execution_id
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(seqs)))
    assert events[-1]["event"] == "workflow_completed"


async def test_status_json_is_what_get_execution_says(
    stack: Stack, target: str, two_naps: wf_pb.Workflow, capsys: pytest.CaptureFixture[str]
) -> None:
    started = await stack.client.start(two_naps.workflow_id, {"seconds": 0.2})
    final = await stack.client.wait_terminal(started.execution_id)

    result = await call_main(capsys, ["--engine", target, "status", started.execution_id, "--json"])

    assert result.code == 0, result
    [printed] = result.json_lines()
    expected = json_format.MessageToDict(
        final,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )
    assert printed == expected
    assert printed["status"] == "EXECUTION_STATUS_COMPLETED"

    human = await call_main(capsys, ["--engine", target, "status", started.execution_id])
    assert human.code == 0
    for expected_text in ("completed", "automatic", "100.0%", "first nap", "second nap"):
        assert expected_text in human.out, (expected_text, human.out)
    assert human.out.count("success") == 2


async def test_manual_run_advance_and_cancel(
    stack: Stack, target: str, two_naps: wf_pb.Workflow, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await call_main(
        capsys,
        [
            "--engine",
            target,
            "run",
            two_naps.workflow_id,
            "--manual",
            "--input",
            '{"seconds": 0.1}',
        ],
    )
    assert run.code == 0, run
    execution_id = run.out.strip()
    await _until(stack, execution_id, ex_pb.EXECUTION_STATUS_WAITING, step=1)

    waiting = await call_main(capsys, ["--engine", target, "status", execution_id])
    assert "waiting" in waiting.out and "manual" in waiting.out

    advanced = await call_main(
        capsys, ["--engine", target, "advance", execution_id, "--data", '{"aprobado": true}']
    )
    assert advanced.code == 0, advanced
    assert "first nap" in advanced.out
    execution = await _until(stack, execution_id, ex_pb.EXECUTION_STATUS_WAITING, step=2)
    assert as_dict(execution.dynamic_properties)["aprobado"] is True

    # Advancing is only for a waiting execution; cancelling only for a live one.
    cancelled = await call_main(capsys, ["--engine", target, "cancel", execution_id, "--json"])
    assert cancelled.code == 0, cancelled
    assert cancelled.json_lines()[0]["status"] == "EXECUTION_STATUS_CANCELLED"
    again = await call_main(capsys, ["--engine", target, "cancel", execution_id])
    assert_readable_error(again)
    assert "EXECUTION_TERMINAL" in again.err
    late = await call_main(capsys, ["--engine", target, "advance", execution_id])
    assert_readable_error(late)

    watched = await call_main(capsys, ["--engine", target, "watch", execution_id])
    assert watched.code == 1, watched
    assert "workflow cancelled" in watched.out


async def _until(stack: Stack, execution_id: str, status: int, step: int) -> ex_pb.Execution:
    for _ in range(200):
        execution = await stack.client.get(execution_id)
        if execution.status == status and execution.current_step.order == step:
            return execution
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution_id} never reached {status} at step {step}: {execution}")


@pytest.mark.parametrize("size", [300, 100_000])  # kept in the input, and set apart as a blob
async def test_run_file_sends_the_document_as_base64(
    stack: Stack,
    target: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    size: int,
) -> None:
    await stack.client.create_workflow("leer", {"name": "eco", "handler": "echo"})
    document = tmp_path / "contrato.pdf"
    content = bytes(range(256)) * (size // 256) + b"%%EOF"
    document.write_bytes(content)

    result = await call_main(
        capsys,
        ["--engine", target, "run", "leer", "--file", str(document), "--input", '{"extra": 1}'],
    )

    assert result.code == 0, result
    execution = await stack.client.get(result.out.strip())
    given = as_dict(execution.input)
    assert given["mime"] == "application/pdf"
    assert given["nombre_documento"] == "contrato.pdf"
    assert uuid.UUID(given["uuid_proceso"])
    assert given["extra"] == 1
    encoded = base64.b64encode(content).decode()
    if isinstance(given["base64"], str):
        assert given["base64"] == encoded
    else:  # large values are stored apart; the input carries the reference
        assert given["base64"]["sha256"] == hashlib.sha256(encoded.encode()).hexdigest()
        assert int(given["base64"]["size_bytes"]) == len(encoded)


async def test_the_same_request_id_starts_once(
    stack: Stack, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await stack.client.create_workflow("leer", {"name": "eco", "handler": "echo"})
    document = tmp_path / "nota.txt"
    document.write_text("hola")
    argv = ["--engine", target, "run", "leer", "--file", str(document), "--request-id", "r-1"]

    first = await call_main(capsys, argv)
    second = await call_main(capsys, argv)

    assert first.code == second.code == 0
    assert first.out == second.out
    given = as_dict((await stack.client.get(first.out.strip())).input)
    assert given["mime"] == "text/plain" and given["nombre_documento"] == "nota.txt"


async def test_errors_are_one_readable_line_with_exit_code_2(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = await call_main(capsys, ["--engine", target, "status", "no-such-execution"])
    assert_readable_error(unknown)
    assert "EXECUTION_NOT_FOUND" in unknown.err

    bad_json = await call_main(capsys, ["--engine", target, "run", "x", "--input", "{nope"])
    assert_readable_error(bad_json)
    assert "--input" in bad_json.err

    nobody = await run_cli("127.0.0.1:1", "watch", "some-id")
    assert_readable_error(nobody)
    assert "cannot reach the engine at 127.0.0.1:1" in nobody.err

    bad_target = await run_cli("grpcs://somewhere:443", "status", "x")
    assert_readable_error(bad_target)
    assert "DISCOVERY_ENGINE" in bad_target.err

    usage = await run_cli(target, "watch")
    assert usage.code == 2 and "usage:" in usage.err


# SIGINT is ignored in a child started by a shell in the background (CI runners do), and
# Python then keeps it ignored: the wrapper gives `discovery` the Ctrl-C a terminal user has.
WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'discovery'; runpy.run_module('services.cli', run_name='__main__')"
)


async def test_ctrl_c_stops_watching_but_not_the_execution(
    stack: Stack, target: str, two_naps: wf_pb.Workflow
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WITH_CTRL_C,
        "run",
        "two naps",
        "--input",
        '{"seconds": 0.8}',
        "--watch",
        cwd=ROOT,
        env=cli_env(target),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    execution_id = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
    while b"first nap  " not in await asyncio.wait_for(process.stdout.readline(), 20):
        pass  # until the first progress line
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 10)

    assert process.returncode == 130
    message = err.decode()
    assert f"discovery watch {execution_id} --after-seq " in message, message
    assert "Traceback" not in message
    final = await stack.client.wait_terminal(execution_id)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
