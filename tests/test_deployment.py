"""docker-compose.yml against the services' real settings (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.auth import SECRET_FILE_ENV
from services.certs import AUTH_KEY, CA_CERT, CA_KEY, SERVICE, make_deployment_secrets
from services.engine.config import Settings as EngineSettings
from services.gateway.config import Settings as GatewaySettings
from services.pioneer.config import Settings as PioneerSettings
from services.tls import CA_ENV, CERT_ENV, KEY_ENV

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
CONFIG_SOURCES = {
    "engine": ROOT / "services/engine/config.py",
    "pioneer": ROOT / "services/pioneer/config.py",
    "gateway": ROOT / "services/gateway/config.py",
}
# Read by every service, through services/auth.py and services/tls.py.
SHARED_SOURCES = (ROOT / "services/auth.py", ROOT / "services/tls.py")
SECRETS = {
    SECRET_FILE_ENV: ("discovery_auth", AUTH_KEY),
    CA_ENV: ("tls_ca", CA_CERT),
    CERT_ENV: ("tls_cert", f"{SERVICE}.crt"),
    KEY_ENV: ("tls_key", f"{SERVICE}.key"),
}


def env(service: str, secrets: Path | None = None) -> dict[str, str]:
    """The service's environment; with `secrets`, the files compose would mount are the ones
    `discovery secrets` made there."""
    values = {k: str(v) for k, v in SERVICES[service]["environment"].items()}
    if secrets is not None:
        for variable, (name, file) in SECRETS.items():
            assert values[variable] == f"/run/secrets/{name}"
            values[variable] = str(secrets / file)
    return values


def test_every_variable_is_one_the_service_reads() -> None:
    for service, source in CONFIG_SOURCES.items():
        text = source.read_text() + "".join(shared.read_text() for shared in SHARED_SOURCES)
        for name in env(service):
            assert f'"{name}"' in text, f"{service} does not read {name}"
        assert SERVICES[service]["command"] == ["python", "-m", f"services.{service}"]


def test_every_service_gets_the_secret_and_its_certificate_as_files() -> None:
    for variable, (name, file) in SECRETS.items():
        assert COMPOSE["secrets"][name]["file"] == f"./secrets/{file}", variable
    for service in CONFIG_SOURCES:
        assert sorted(SERVICES[service]["secrets"]) == sorted(n for n, _ in SECRETS.values())


def test_the_services_find_each_other_over_mutual_tls(tmp_path: Path) -> None:
    made = make_deployment_secrets(tmp_path, ("engine", "pioneer", "gateway", "localhost"))
    assert {p.name for p in made} == {AUTH_KEY, CA_CERT, CA_KEY, "service.crt", "service.key"}
    engine = EngineSettings.from_env(env("engine", tmp_path))
    pioneer = PioneerSettings.from_env(env("pioneer", tmp_path))
    gateway = GatewaySettings.from_env(env("gateway", tmp_path))
    assert engine.auth_keys == pioneer.auth_keys == gateway.auth_keys != ()
    assert engine.tls is not None and engine.tls == pioneer.tls == gateway.tls
    assert make_deployment_secrets(tmp_path, ("engine",)) == [], "a second run keeps them"
    assert engine.host == pioneer.host == gateway.host == "0.0.0.0"
    assert engine.mongodb_uri is not None and "mongo:27017" in engine.mongodb_uri
    # Pioneer pulls its work from the engine's step queue: it dials the engine, never the
    # other way round.
    assert pioneer.discovery_url == f"engine:{engine.port}"
    assert not [name for name in env("engine") if name.startswith("PIONEER")]
    assert gateway.engine_target == f"engine:{engine.port}"
    assert f"{gateway.port}:{gateway.port}" in SERVICES["gateway"]["ports"]
    assert f"{engine.port}:{engine.port}" in SERVICES["engine"]["ports"]


def test_start_order_waits_for_health() -> None:
    assert "rs.initiate" in " ".join(SERVICES["mongo"]["healthcheck"]["test"])
    assert SERVICES["engine"]["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert SERVICES["gateway"]["depends_on"]["engine"]["condition"] == "service_healthy"
    # The engine starts without pioneer (a queued step waits for a runner); pioneer, which
    # polls the engine, comes after it.
    assert "pioneer" not in SERVICES["engine"]["depends_on"]
    assert "engine" in SERVICES["pioneer"]["depends_on"]
    for service in ("engine", "pioneer", "gateway"):
        assert SERVICES[service]["build"] == "."
        assert "healthcheck" in SERVICES[service]


def test_compose_still_refuses_a_request_without_credentials(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path, ("gateway",))
    assert not [name for name in env("gateway") if name.startswith("GATEWAY_ANONYMOUS")]
    assert "GATEWAY_TRUSTED_NETWORK" not in env("gateway")
    gateway = GatewaySettings.from_env(env("gateway", tmp_path))
    assert gateway.anonymous_access is False
    assert gateway.cors_origins == ()
