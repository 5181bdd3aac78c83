"""`watch` as a user lives it: through an engine restart, and on a real terminal."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import signal
import struct
import termios
import time
from typing import Any

from discovery.engine.v1 import workflow_pb2 as wf_pb

from tests.cli.cli import CLI, cli_env
from tests.stack import (
    ROOT,
    Client,
    EngineProcess,
)

ARTIFACT = ROOT / "test-artifacts" / "cli-watch.txt"


async def test_watch_survives_an_engine_restart_and_shows_each_seq_once(
    restartable: tuple[EngineProcess, Client],
) -> None:
    engine, client = restartable
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 5, "retry": {"max_attempts": 2}}
    workflow = await client.create_workflow(
        "restart me", {"name": "a", **step}, {"name": "b", **step}
    )
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        workflow.workflow_id,
        "--input",
        '{"seconds": 1.2}',
        "--watch",
        "--json",
        cwd=ROOT,
        env=cli_env(client.target),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout = process.stdout
    errors = asyncio.create_task(process.stderr.read())
    lines: list[dict[str, Any]] = []

    async def next_line(seconds: float) -> bytes:
        try:
            return await asyncio.wait_for(stdout.readline(), seconds)
        except TimeoutError:
            process.send_signal(signal.SIGUSR1)  # the CLI prints its threads' stacks
            await asyncio.sleep(1)
            process.kill()
            stderr = (await errors).decode(errors="replace")
            raise AssertionError(
                f"no line from the CLI for {seconds:g} s\nlines: {lines}\nstderr: {stderr}"
                f"\nengine log (tail): {engine.log_tail()}"
            ) from None

    try:
        # Kill the engine while the first step is running, from the CLI's point of view.
        while not any(line.get("event") == "step_progress" for line in lines):
            raw = await next_line(20)
            assert raw, "the CLI ended before any progress"
            lines.append(json.loads(raw))
        engine.kill()
        await asyncio.sleep(0.8)  # the CLI retries against a dead port meanwhile
        engine.start()
        while raw := await next_line(45):
            lines.append(json.loads(raw))
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = (await errors).decode()

    assert code == 0, stderr
    started, *events = lines
    assert "event" not in started  # `run --json` first prints the execution it started
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(seqs) + 1)), "each seq once, in order"
    assert events[-1]["event"] == "workflow_completed"
    stored = await client.events(started["execution_id"], 0)
    assert seqs == [event.seq for event in stored]
    assert "resuming after seq" in stderr, stderr
    assert "Traceback" not in stderr


async def test_watch_draws_live_bars_on_a_terminal(target: str, two_naps: wf_pb.Workflow) -> None:
    captured = await _run_in_terminal(
        target, "run", two_naps.workflow_id, "--input", '{"seconds": 0.8}', "--watch"
    )

    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_bytes(captured)
    text = captured.decode()
    assert "\x1b[" in text, "a terminal gets colour and cursor control"
    assert "━" in text, "progress bars"
    for expected in ("first nap", "second nap", "100%", "ETA", "sleeping", "workflow completed"):
        assert expected in text, expected


async def _run_in_terminal(target: str, *args: str) -> bytes:
    """The CLI with a pseudo-terminal as stdin, stdout and stderr; everything it drew."""
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        cwd=ROOT,
        env=cli_env(target, TERM="xterm-256color"),
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
    )
    os.close(child_fd)
    chunks: list[bytes] = []

    def read_all() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    try:
        await asyncio.to_thread(read_all)
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        os.close(main_fd)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert code == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks)
