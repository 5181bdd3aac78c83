"""Fixtures of the CLI tests: workflows on the real in-process stack."""

from __future__ import annotations

import pytest
from discovery.engine.v1 import workflow_pb2 as wf_pb

from tests.stack import Stack, token

NAP = {"handler": "sleep", "heartbeat_timeout_seconds": 5, "retry": {"max_attempts": 1}}


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI run in this process (`call_main`) finds its token where a user's shell has it."""
    monkeypatch.setenv("DISCOVERY_TOKEN", token())


@pytest.fixture
def target(stack: Stack) -> str:
    return stack.client.target


@pytest.fixture
async def two_naps(stack: Stack) -> wf_pb.Workflow:
    """Two sleep steps; the input's `seconds` says how long each one sleeps."""
    return await stack.client.create_workflow(
        "two naps", {"name": "first nap", **NAP}, {"name": "second nap", **NAP}
    )
