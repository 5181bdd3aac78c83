"""Clients of several engines: the gateway, pioneer and the CLI take a list of engines (or any
gRPC target) and spread their calls over it, going on with the others when one stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from discovery_client import Client as CliClient
from discovery_client import Settings as ClientSettings
from services.certs import Authority
from services.cli.config import engine_target
from services.cli.errors import UsageError
from services.engine.app import Engine
from services.envconfig import ConfigError
from services.gateway.config import Settings as GatewaySettings
from services.gateway.engine import engine_client
from services.grpc_auth import BearerToken
from services.pioneer.config import Settings as PioneerSettings
from services.tls import CA_ENV, CERT_ENV, KEY_ENV, tls_from_env
from tests.stack import KEY_FILES, engine_settings, free_port, token


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("127.0.0.1:50051,127.0.0.1:50061", "ipv4:127.0.0.1:50051,127.0.0.1:50061"),
        (" 10.0.0.1:1/ , 10.0.0.2:2 ,", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        ("[::1]:50051,[fd00::2]:50051", "ipv6:[::1]:50051,[fd00::2]:50051"),
        # gRPC targets are passed on as they are: a name with every engine's address…
        ("dns:///engines:50051", "dns:///engines:50051"),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        ("unix:/run/engine.sock", "unix:/run/engine.sock"),
        # …and one engine is what it always was.
        ("engine:50051", "engine:50051"),
    ],
)
def test_a_list_of_engines_is_one_grpc_target(value: str, target: str) -> None:
    assert GatewaySettings.from_env({**KEY_FILES, "ENGINE_URL": value}).engine_target == target
    assert PioneerSettings.from_env({**KEY_FILES, "ENGINE_URL": value}).discovery_url == target
    assert PioneerSettings.from_env({**KEY_FILES, "DISCOVERY_URL": value}).discovery_url == target
    assert engine_target(value, {}) == target
    assert engine_target(None, {"DISCOVERY_ENGINE": value}) == target


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("engine-1:50051,engine-2:50051", r"'engine-1' .* not an IP address.*dns:///NAME:PORT"),
        ("127.0.0.1:50051,[::1]:50051", "mixes IPv4 and IPv6"),
        ("127.0.0.1:50051,127.0.0.1", r"'127.0.0.1' is not host:port"),
        ("127.0.0.1:1,127.0.0.1:1", "lists an address twice"),
        ("::1:50051,::2:50051", r"\[ADDRESS\]:PORT"),
        ("dns:///", "names no address"),
    ],
)
def test_a_malformed_list_is_refused_naming_the_variable(value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"^ENGINE_URL.*{says}"):
        GatewaySettings.from_env({**KEY_FILES, "ENGINE_URL": value})
    with pytest.raises(ConfigError, match=f"^DISCOVERY_URL.*{says}"):
        PioneerSettings.from_env({**KEY_FILES, "DISCOVERY_URL": value})
    with pytest.raises(UsageError, match=f"^--engine.*{says}"):
        engine_target(value, {})
    with pytest.raises(UsageError, match=f"^DISCOVERY_ENGINE.*{says}"):
        engine_target(None, {"DISCOVERY_ENGINE": value})


@pytest.fixture
async def two_engines(
    mongo_server: str, database: str, tmp_path: Path
) -> AsyncIterator[tuple[list[Engine], dict[str, str]]]:
    """Two engines on one database, serving mutual TLS with certificates that name
    127.0.0.1, and the environment of a client of both."""
    ca = Authority("test-ca")
    issued = ca.issue(tmp_path, "service", ("127.0.0.1",))
    tls_env = {
        CA_ENV: str(ca.write_ca(tmp_path / "ca.crt")),
        CERT_ENV: str(issued.cert),
        KEY_ENV: str(issued.key),
    }
    engines = []
    try:
        for _ in range(2):
            settings = engine_settings(mongo_server, database, free_port())
            engine = Engine(replace(settings, tls=tls_from_env(tls_env)))
            await engine.start()
            engines.append(engine)
        addresses = ",".join(f"127.0.0.1:{engine.port}" for engine in engines)
        yield engines, {**KEY_FILES, **tls_env, "ENGINE_URL": addresses}
    finally:
        for engine in engines:
            await engine.stop(grace=0)


async def test_clients_of_two_engines_go_on_when_one_stops(
    two_engines: tuple[list[Engine], dict[str, str]],
) -> None:
    engines, env = two_engines
    settings = GatewaySettings.from_env(env)
    assert settings.engine_target.startswith("ipv4:")
    gateway = engine_client(settings).with_credentials(BearerToken(token()))
    cli = CliClient(ClientSettings(settings.engine_target, token(), settings.tls))
    try:
        # Both engines answer (TLS checks each against the list's first address, which both
        # certificates name), then either one alone does.
        for _ in range(4):
            await gateway.list_workflows(page_size=10)
            await asyncio.to_thread(cli.list_workflows, page_size=10)
        await engines[0].stop(grace=0)
        for _ in range(6):
            await gateway.list_workflows(page_size=10)
            await asyncio.to_thread(cli.list_workflows, page_size=10)
    finally:
        await gateway.close()
        cli.close()
