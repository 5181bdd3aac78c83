"""docker-compose.yml against the services' real settings (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service]["environment"].items()}


def test_every_variable_is_one_the_service_reads() -> None:
    for service, source in CONFIG_SOURCES.items():
        text = source.read_text()
        for name in env(service):
            assert f'"{name}"' in text, f"{service} does not read {name}"
        assert SERVICES[service]["command"] == ["python", "-m", f"services.{service}"]


def test_the_services_find_each_other() -> None:
    engine = EngineSettings.from_env(env("engine"))
    pioneer = PioneerSettings.from_env(env("pioneer"))
    gateway = GatewaySettings.from_env(env("gateway"))
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
