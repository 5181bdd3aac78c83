"""PIONEER_STEP_MODULES: a user's step modules are imported at start and their handlers
offered beside the built-in ones; a module that cannot be imported stops pioneer, named."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from services.envconfig import ConfigError
from services.pioneer.config import Settings
from tests.stack import KEY_FILES

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = KEY_FILES


def test_modules_are_read_comma_separated() -> None:
    settings = Settings.from_env({**KEY_ENV, "PIONEER_STEP_MODULES": " a.steps, b ,,c_d.e "})
    assert settings.step_modules == ("a.steps", "b", "c_d.e")
    assert Settings.from_env(KEY_ENV).step_modules == ()


def test_a_name_that_cannot_be_a_module_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"PIONEER_STEP_MODULES.*'my-steps'"):
        Settings.from_env({**KEY_ENV, "PIONEER_STEP_MODULES": "ok.steps,my-steps"})


async def _pioneer(modules: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'generated'}",
        "PIONEER_PORT": "0",
        "DISCOVERY_URL": "127.0.0.1:9",
        "PIONEER_STEP_MODULES": modules,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.pioneer", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )


async def _first_line_of(process: asyncio.subprocess.Process, *events: str) -> dict[str, Any]:
    assert process.stderr is not None
    while line := await process.stderr.readline():
        entry: dict[str, Any] = json.loads(line)
        if entry["event"] in events:
            return entry
    raise AssertionError(f"pioneer exited before logging any of {events}")


async def test_a_users_module_adds_its_handlers_to_the_built_in_ones() -> None:
    process = await _pioneer("tests.pioneer.user_steps")
    try:
        serving = await asyncio.wait_for(_first_line_of(process, "pioneer serving"), 15)
        assert {"user_hello", "sleep", "echo"} <= set(serving["handlers"])
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("module", "why"),
    [("tests.pioneer.no_such_steps", "ModuleNotFoundError"), ("json.tool.nope", "ModuleNotFound")],
)
async def test_a_module_that_fails_to_import_stops_pioneer_naming_it(module: str, why: str) -> None:
    process = await _pioneer(f"tests.pioneer.user_steps,{module}")
    try:
        entry = await asyncio.wait_for(
            _first_line_of(process, "bad configuration", "pioneer serving"), 15
        )
        assert entry["event"] == "bad configuration"
        assert module in entry["error"] and why in entry["error"]
        assert await asyncio.wait_for(process.wait(), 15) == 2
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
