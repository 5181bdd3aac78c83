"""Calling `discovery` the way a user does: as a child process, or through `main(argv)`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from services.cli.__main__ import main
from tests.stack import ROOT, token

CLI = [sys.executable, "-m", "services.cli"]


def cli_env(target: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}",
        "DISCOVERY_ENGINE": target,
        "DISCOVERY_TOKEN": token(),
    }
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


async def run_cli(target: str, *args: str, limit_seconds: float = 60) -> Result:
    """`python -m services.cli ARGS` with DISCOVERY_ENGINE=target; stdout is a pipe."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        cwd=ROOT,
        env=cli_env(target),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit_seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def call_main(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> Result:
    """`main(argv)` in this process. In a thread, so the engine serving on this event loop
    keeps answering while the CLI blocks on its calls."""
    capsys.readouterr()  # drop whatever came before
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_readable_error(result: Result) -> None:
    """One line on stderr, no traceback, nothing on stdout."""
    assert result.code == 2, result
    assert "Traceback" not in result.err, result.err
    assert result.err.startswith("discovery: "), result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
