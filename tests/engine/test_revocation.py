"""A token can be revoked before it expires: the engine that is told refuses it at once,
every other engine on the database within a refresh, and a restarted one from its first
call (issue 14, finding 5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from discovery.engine.v1 import token_service_pb2 as ts
from discovery.engine.v1 import token_service_pb2_grpc as ts_grpc
from discovery.engine.v1 import workflow_service_pb2 as ws
from google.protobuf import timestamp_pb2

from services.auth import ADMIN, CLIENT, RUNNER
from services.engine.app import Engine
from services.engine.revocations import REFRESH_SECONDS
from tests.stack import AUTHORITY, Client, Stack, engine_settings, error_info, free_port, token


async def _lists(client: Client) -> bool:
    await client.workflows.ListWorkflows(ws.ListWorkflowsRequest(), timeout=5)
    return True


async def _refused(client: Client) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _lists(client)
    return refused.value.code(), error_info(refused.value)[0]


@pytest.fixture
async def second_engine(stack: Stack) -> AsyncIterator[Engine]:
    engine = Engine(engine_settings(stack.mongo_uri, stack.database, free_port()))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop(grace=0)


async def test_a_revoked_token_is_refused_by_every_engine(
    stack: Stack, second_engine: Engine
) -> None:
    leaked = token(CLIENT, "acme")
    here = Client(stack.client.target, token=leaked)
    there = Client(f"127.0.0.1:{second_engine.port}", token=leaked)
    acme_admin = Client(stack.client.target, token=token(ADMIN, "acme"))
    admin = ts_grpc.TokenServiceStub(acme_admin.channel)
    try:
        assert await _lists(here) and await _lists(there)
        revoked = await admin.RevokeToken(ts.RevokeTokenRequest(token=leaked), timeout=5)
        assert revoked.token_id == AUTHORITY.verify(leaked).token_id
        assert revoked.expires_at.seconds == int(AUTHORITY.verify(leaked).expires_at)

        assert await _refused(here) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
        # The other engine reads the list again within REFRESH_SECONDS.
        async with asyncio.timeout(REFRESH_SECONDS * 5):
            while True:
                try:
                    await _lists(there)
                except grpc.aio.AioRpcError as exc:
                    assert error_info(exc)[0] == "TOKEN_REVOKED"
                    break
                await asyncio.sleep(0.1)
        listed = await admin.ListRevokedTokens(ts.ListRevokedTokensRequest(), timeout=5)
        assert revoked.token_id in listed.token_ids

        # A restarted engine refuses it from its first call.
        await second_engine.stop(grace=0)
        await second_engine.start()
        assert await _refused(there) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
        # Another token of the same holder is not touched.
        other = Client(stack.client.target, token=token(CLIENT, "acme"))
        try:
            assert await _lists(other)
        finally:
            await other.close()
    finally:
        await here.close()
        await there.close()
        await acme_admin.close()


async def test_revoking_by_id_and_who_may(stack: Stack) -> None:
    admin = ts_grpc.TokenServiceStub(stack.client.channel)  # an admin of tenant "default"
    pioneer = token(RUNNER, "*")
    pioneer_id = AUTHORITY.verify(pioneer).token_id
    # A token of another tenant (here every tenant's runner): by its id only.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.RevokeToken(ts.RevokeTokenRequest(token=pioneer), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    until = timestamp_pb2.Timestamp()
    until.FromDatetime(datetime.now(UTC) + timedelta(hours=2))
    revoked = await admin.RevokeToken(
        ts.RevokeTokenRequest(token_id=pioneer_id, expires_at=until), timeout=5
    )
    assert revoked.expires_at.seconds == until.seconds
    runner = Client(stack.client.target, token=pioneer)
    try:
        assert await _refused(runner) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    finally:
        await runner.close()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.RevokeToken(ts.RevokeTokenRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.RevokeToken(ts.RevokeTokenRequest(token="a.b.c"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    client = Client(stack.client.target, token=token(CLIENT))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ts_grpc.TokenServiceStub(client.channel).RevokeToken(
                ts.RevokeTokenRequest(token_id="x"), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await client.close()
