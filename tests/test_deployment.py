"""docker-compose.yml against the services' real settings (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.auth import SECRET_FILE_ENV, create_secret_file
from services.engine.config import Settings as EngineSettings
from services.gateway.config import Settings as GatewaySettings
from services.pioneer.config import Settings as PioneerSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
CONFIG_SOURCES = {
    "engine": ROOT / "services/engine/config.py",
    "pioneer": ROOT / "services/pioneer/config.py",
    "gateway": ROOT / "services/gateway/config.py",
}
# Read by every service, through services/auth.py.
SHARED_SOURCE = ROOT / "services/auth.py"
SECRET_IN_CONTAINER = "/run/secrets/discovery_auth"


def env(service: str, secret: Path | None = None) -> dict[str, str]:
    """The service's environment; `secret` stands in for the file compose mounts."""
    values = {k: str(v) for k, v in SERVICES[service]["environment"].items()}
    if secret is not None:
        assert values[SECRET_FILE_ENV] == SECRET_IN_CONTAINER
        values[SECRET_FILE_ENV] = str(secret)
    return values


def test_every_variable_is_one_the_service_reads() -> None:
    for service, source in CONFIG_SOURCES.items():
        text = source.read_text() + SHARED_SOURCE.read_text()
        for name in env(service):
            assert f'"{name}"' in text, f"{service} does not read {name}"
        assert SERVICES[service]["command"] == ["python", "-m", f"services.{service}"]


def test_every_service_gets_the_shared_secret_as_a_file() -> None:
    assert COMPOSE["secrets"]["discovery_auth"]["file"] == "./secrets/auth.key"
    for service in CONFIG_SOURCES:
        assert SERVICES[service]["secrets"] == ["discovery_auth"]
        assert env(service)[SECRET_FILE_ENV] == SECRET_IN_CONTAINER


def test_the_services_find_each_other(tmp_path: Path) -> None:
    secret = tmp_path / "auth.key"
    create_secret_file(secret)
    engine = EngineSettings.from_env(env("engine", secret))
    pioneer = PioneerSettings.from_env(env("pioneer", secret))
    gateway = GatewaySettings.from_env(env("gateway", secret))
    assert engine.auth_keys == pioneer.auth_keys == gateway.auth_keys != ()
    assert engine.host == pioneer.host == gateway.host == "0.0.0.0"
    assert engine.mongodb_uri is not None and "mongo:27017" in engine.mongodb_uri
    assert engine.pioneer_targets == (f"pioneer:{pioneer.port}",)
    assert pioneer.discovery_url == f"engine:{engine.port}"
    assert gateway.engine_target == f"engine:{engine.port}"
    assert f"{gateway.port}:{gateway.port}" in SERVICES["gateway"]["ports"]
    assert f"{engine.port}:{engine.port}" in SERVICES["engine"]["ports"]


def test_start_order_waits_for_health() -> None:
    assert "rs.initiate" in " ".join(SERVICES["mongo"]["healthcheck"]["test"])
    assert SERVICES["engine"]["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert SERVICES["gateway"]["depends_on"]["engine"]["condition"] == "service_healthy"
    for service in ("engine", "pioneer", "gateway"):
        assert SERVICES[service]["build"] == "."
        assert "healthcheck" in SERVICES[service]
