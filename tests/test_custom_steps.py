"""A user's own steps, as a user runs them: a fresh virtual environment that installs only
Discovery without extras (the step SDK, the client library, the `discovery` command) and the
example package examples/custom-steps, then `discovery pioneer --steps custom_steps.steps`
against an engine, and the example's workflow created and run with that environment's
`discovery`. Nothing of the repository is on its path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from google.protobuf import json_format

from services.pioneer.poller import process_runner_id
from tests.stack import KEY_FILES, Stack, token, wait_for_runner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom-steps"
# What the project's wheel is built from. Both are built from copies: a build in place would
# leave build/ and *.egg-info in the repository.
SOURCES = ("pyproject.toml", "README.md", "services", "discovery_client", "generated")
SERVER_ONLY = ("pymongo", "aiohttp", "secantus", "jsonschema")

# Building the wheel and installing its pinned dependencies from the package caches.
pytestmark = pytest.mark.timeout(600)


def make_environment(tmp: Path) -> Path:
    """A virtual environment with Discovery (no extras) and the example installed; its bin/."""
    source = tmp / "discovery"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    example = tmp / "custom-steps"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # Every version as the project's lock pins it, transitive ones included.
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "requirements.lock"),
            str(source),
            str(example),
        ],
        check=True,
        timeout=480,
        env=user_env(),
    )
    return venv / "bin"


def importable(bin_dir: Path, modules: tuple[str, ...], cwd: Path) -> list[str]:
    """Those of `modules` the environment can import."""
    return [
        module
        for module in modules
        if subprocess.run(
            [str(bin_dir / "python"), "-c", f"import {module}"],
            capture_output=True,
            env=user_env(),
            cwd=cwd,
        ).returncode
        == 0
    ]


def user_env(**extra: str) -> dict[str, str]:
    """The test's environment without its PYTHONPATH: only what is installed counts."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


async def test_a_package_of_ones_own_steps_runs_a_workflow_from_a_fresh_environment(
    stack: Stack, tmp_path: Path
) -> None:
    bin_dir = await asyncio.to_thread(make_environment, tmp_path)
    assert await asyncio.to_thread(importable, bin_dir, SERVER_ONLY, tmp_path) == []

    engine = stack.client.target
    env = user_env(**KEY_FILES, DISCOVERY_TOKEN=token(), PIONEER_PORT="0")
    log = (tmp_path / "pioneer.log").open("wb")
    pioneer = await asyncio.create_subprocess_exec(
        str(bin_dir / "discovery"),
        *("pioneer", "--steps", "custom_steps.steps", "--engine", engine),
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def discovery(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir / "discovery"), "--engine", engine, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        await wait_for_runner(
            stack.client.queue,
            process_runner_id(pioneer.pid),
            30,
            lambda: (tmp_path / "pioneer.log").read_text(errors="replace"),
        )
        created = await asyncio.to_thread(
            discovery, "workflows", "create", "-f", str(EXAMPLE / "workflow.yaml")
        )
        assert created.returncode == 0, created.stderr
        text = "the quick brown fox jumps over the extraordinarily lazy dog " * 300
        ran = await asyncio.to_thread(
            discovery,
            "run",
            "count words",
            "--input",
            json.dumps({"text": text}),
            "--watch",
            "--json",
        )
        assert ran.returncode == 0, ran.stderr
        started = json.loads(ran.stdout.splitlines()[0])
        execution = await stack.client.get(started["execution_id"])
        assert execution.status == ex_pb.EXECUTION_STATUS_COMPLETED
        output = json_format.MessageToDict(execution.steps_history[-1].output_payload)
        assert output == {"success": True, "words": 3000.0, "longest_word": "extraordinarily"}
        assert execution.steps_history[-1].runner_id == process_runner_id(pioneer.pid)
    finally:
        pioneer.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(pioneer.wait(), 30)
        log.close()
    assert code == 0, (tmp_path / "pioneer.log").read_text(errors="replace")
