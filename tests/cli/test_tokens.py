"""`discovery token` and `discovery revoke`: the operator issues a token with its key, an
admin revokes it, and the engine refuses it from then on."""

from __future__ import annotations

import grpc
import pytest
from discovery.engine.v1 import workflow_service_pb2 as ws

from services.auth import CLIENT
from tests.cli.cli import assert_readable_error, call_main
from tests.stack import KEY_FILES, Client, Stack, error_info


async def test_an_issued_token_works_until_it_is_revoked(
    stack: Stack, target: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tests' key stands for the operator's (DISCOVERY_SIGNING_KEY_FILE).
    monkeypatch.setenv("DISCOVERY_SIGNING_KEY_FILE", KEY_FILES["DISCOVERY_SIGNING_KEY_FILE"])
    issued = await call_main(capsys, ["token", "--role", CLIENT])  # of tenant default
    assert issued.code == 0, issued.err
    leaked = issued.out.strip()
    holder = Client(target, token=leaked)
    try:
        await holder.workflows.ListWorkflows(ws.ListWorkflowsRequest(), timeout=5)
        revoked = await call_main(capsys, ["--engine", target, "revoke", leaked])
        assert revoked.code == 0, revoked.err
        assert revoked.out.startswith("token ") and "revoked" in revoked.out
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await holder.workflows.ListWorkflows(ws.ListWorkflowsRequest(), timeout=5)
        assert error_info(refused.value)[0] == "TOKEN_REVOKED"
    finally:
        await holder.close()

    too_long = await call_main(capsys, ["token", "--role", CLIENT, "--ttl", str(400 * 86400)])
    assert_readable_error(too_long)
    assert "at most" in too_long.err
    everyone = await call_main(capsys, ["token", "--role", CLIENT, "--tenant", "*"])
    assert_readable_error(everyone)
    assert "only a runner token may name every tenant" in everyone.err
