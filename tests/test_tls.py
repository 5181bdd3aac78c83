"""Mutual TLS between the services and HTTPS on the gateway, with certificates from a private
CA: a run goes through; a plaintext client, one without a certificate, and one whose
certificate another CA signed are all turned away before any call."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
import grpc
import pytest
from aiohttp import web
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc

from services.certs import Authority
from services.gateway.app import create_runner
from services.gateway.config import Settings as GatewaySettings
from services.grpc_auth import BearerToken, bearer_interceptors
from services.tls import CA_ENV, CERT_ENV, KEY_ENV, Tls, https_context, tls_from_env
from tests.stack import (
    AUTH_KEYS,
    ROOT,
    EngineProcess,
    PioneerProcess,
    engine_process_env,
    free_port,
    token,
    wait_for_runner,
)


@dataclass
class SecureStack:
    engine_target: str
    env: dict[str, str]  # what a service of this deployment is given
    tls: Tls
    rogue: Tls  # a client certificate from another CA
    https: ssl.SSLContext
    trust: ssl.SSLContext  # a browser that trusts the gateway's certificate


@pytest.fixture(scope="module")
async def secure(
    mongo_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SecureStack]:
    certs = tmp_path_factory.mktemp("certs")
    ca = Authority("discovery-test-ca")
    service = ca.issue(certs, "service", ("localhost", "127.0.0.1"))
    rogue_ca = Authority("somebody-else")
    rogue = rogue_ca.issue(certs, "rogue", ("localhost", "127.0.0.1"))
    env = {
        CA_ENV: str(ca.write_ca(certs / "ca.crt")),
        CERT_ENV: str(service.cert),
        KEY_ENV: str(service.key),
    }
    tls = tls_from_env(env)
    assert tls is not None
    engine_port, pioneer_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("logs")
    pioneer = PioneerProcess(
        {
            **env,
            "PIONEER_PORT": str(pioneer_port),
            "DISCOVERY_URL": f"127.0.0.1:{engine_port}",
        },
        logs / "pioneer.log",
    )
    engine = EngineProcess(
        {
            **env,
            **engine_process_env(mongo_server, "tls", engine_port),
        },
        logs / "engine.log",
    )
    engine.start()
    try:
        await _wait_serving(f"127.0.0.1:{engine_port}", tls)
        # Pioneer pulls its work over mutual TLS; the engine names only handlers it offered.
        pioneer.start()
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{engine_port}",
            tls.channel_credentials(),
            interceptors=bearer_interceptors(BearerToken(token())),
        ) as channel:
            queue = sq_grpc.StepQueueServiceStub(channel)
            await wait_for_runner(queue, pioneer.runner_id, explain=pioneer.log_tail)
        trust = ssl.create_default_context(cafile=env[CA_ENV])
        yield SecureStack(
            engine_target=f"127.0.0.1:{engine_port}",
            env=env,
            tls=tls,
            rogue=Tls(ca=tls.ca, cert=rogue.cert.read_bytes(), key=rogue.key.read_bytes()),
            https=https_context(service.cert, service.key),
            trust=trust,
        )
    finally:
        engine.stop()
        pioneer.stop()


async def _wait_serving(target: str, tls: Tls) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.secure_channel(target, tls.channel_credentials()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(200):
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
    raise TimeoutError(f"{target} not serving over TLS")


async def _list_workflows(channel: grpc.aio.Channel) -> ws.ListWorkflowsResponse:
    response: ws.ListWorkflowsResponse = await ws_grpc.WorkflowServiceStub(channel).ListWorkflows(
        ws.ListWorkflowsRequest(), timeout=5
    )
    return response


async def test_a_run_goes_through_mutual_tls_end_to_end(secure: SecureStack) -> None:
    # The gateway dials the engine with the deployment's certificate and serves HTTPS.
    settings = GatewaySettings(
        port=0, engine_target=secure.engine_target, auth_keys=AUTH_KEYS, tls=secure.tls
    )
    runner = create_runner(replace(settings, sync_wait_seconds=20.0), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=secure.https)
    await site.start()
    port = runner.addresses[0][1]
    try:
        headers = {"Authorization": f"Bearer {token()}"}
        async with aiohttp.ClientSession(headers=headers) as browser:
            base = f"https://localhost:{port}"
            async with browser.post(
                f"{base}/workflows",
                json={"name": "tls", "steps": [{"name": "a", "handler": "echo"}]},
                ssl=secure.trust,
            ) as created:
                assert created.status == 201, await created.text()
                workflow_id = (await created.json())["workflow_id"]
            # Pioneer's polls for the step and its reports to the engine are TLS too.
            async with browser.post(
                f"{base}/execute/", json={"workflow_id": workflow_id, "data": {}}, ssl=secure.trust
            ) as finished:
                assert finished.status == 200, await finished.text()
                assert (await finished.json())["status"] in {"completed"}
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the HTTPS port
                async with browser.get(f"http://127.0.0.1:{port}/workflows") as plain:
                    await plain.read()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("who", ["plaintext", "no client certificate", "another CA"])
async def test_a_client_without_the_deployments_certificate_is_turned_away(
    secure: SecureStack, who: str
) -> None:
    interceptors = bearer_interceptors(BearerToken(token()))  # a valid token is not enough
    if who == "plaintext":
        channel = grpc.aio.insecure_channel(secure.engine_target, interceptors=interceptors)
    elif who == "no client certificate":
        channel = grpc.aio.secure_channel(
            secure.engine_target,
            grpc.ssl_channel_credentials(root_certificates=secure.tls.ca),
            interceptors=interceptors,
        )
    else:
        channel = grpc.aio.secure_channel(
            secure.engine_target, secure.rogue.channel_credentials(), interceptors=interceptors
        )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _list_workflows(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
    async with grpc.aio.secure_channel(
        secure.engine_target, secure.tls.channel_credentials(), interceptors=interceptors
    ) as trusted:
        await _list_workflows(trusted)


def test_the_health_check_and_the_cli_dial_with_the_deployments_certificate(
    secure: SecureStack,
) -> None:
    env = {**os.environ, **secure.env, "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}"}
    probe = subprocess.run(
        [sys.executable, "-m", "services.healthcheck", secure.engine_target],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert probe.returncode == 0, probe.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "services.cli", "workflows", "list", "--json"],
        env={**env, "DISCOVERY_ENGINE": secure.engine_target, "DISCOVERY_TOKEN": token()},
        capture_output=True,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    half = {k: v for k, v in env.items() if k != KEY_ENV}
    refused = subprocess.run(
        [sys.executable, "-m", "services.healthcheck", secure.engine_target],
        env=half,
        capture_output=True,
        timeout=30,
    )
    assert refused.returncode != 0
    assert b"DISCOVERY_TLS_KEY" in refused.stderr
