"""Settings from the environment: defaults, the seed's URL form, and loud failures."""

from __future__ import annotations

import os

import pytest

from services.envconfig import ConfigError
from services.pioneer.config import Settings
from tests.stack import AUTH_KEYS, KEY_FILES

KEY_ENV = KEY_FILES
KEYS = AUTH_KEYS


def test_defaults() -> None:
    assert Settings.from_env(KEY_ENV) == Settings(
        host="127.0.0.1",
        port=50052,
        discovery_url="localhost:50051",
        max_concurrent_steps=64,
        auth_keys=KEYS,
    )


def test_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            **KEY_ENV,
            "PIONEER_HOST": "0.0.0.0",
            "PIONEER_PORT": "0",
            "DISCOVERY_URL": "engine:7000",
            "PIONEER_MAX_CONCURRENT_STEPS": "8",
        }
    )
    assert settings == Settings(
        host="0.0.0.0", port=0, discovery_url="engine:7000", max_concurrent_steps=8, auth_keys=KEYS
    )


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("ENGINE_URL", "http://engine:50051"),
        ("ENGINE_URL", "engine:50051/"),
        ("DISCOVERY_URL", "engine:50051"),
        ("DISCOVERY_URL", "grpc://engine:50051"),
    ],
)
def test_the_engines_address_as_the_gateway_reads_it(name: str, url: str) -> None:
    assert Settings.from_env({**KEY_ENV, name: url}).discovery_url == "engine:50051"


def test_document_workers_one_per_core_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert Settings.from_env(KEY_ENV).document_worker_count() == 4
    assert Settings.from_env(KEY_ENV).worker_memory_mib == 1024
    capped = Settings.from_env({**KEY_ENV, "PIONEER_MAX_CONCURRENT_STEPS": "2"})
    assert capped.document_worker_count() == 2
    settings = Settings.from_env(
        {**KEY_ENV, "PIONEER_DOCUMENT_WORKERS": "8", "PIONEER_WORKER_MEMORY_MIB": "512"}
    )
    assert (settings.document_worker_count(), settings.worker_memory_mib) == (8, 512)


@pytest.mark.parametrize("url", ["http://localhost:8080", "https://discovery.example/"])
def test_the_seeds_http_discovery_url_is_the_gateway_and_stops_pioneer(url: str) -> None:
    """It is where HTTP runners report; gRPC pointed there would fail on every call."""
    with pytest.raises(ConfigError, match=r"^DISCOVERY_URL=.*set ENGINE_URL=host:port"):
        Settings.from_env({**KEY_ENV, "DISCOVERY_URL": url})
    # Beside ENGINE_URL (an environment shared with HTTP runners) it is not read.
    settings = Settings.from_env({**KEY_ENV, "DISCOVERY_URL": url, "ENGINE_URL": "engine:7000"})
    assert settings.discovery_url == "engine:7000"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIONEER_PORT", "http"),
        ("PIONEER_PORT", "70000"),
        ("PIONEER_MAX_CONCURRENT_STEPS", "0"),
        ("PIONEER_DOCUMENT_WORKERS", "0"),
        ("PIONEER_DOCUMENT_WORKERS", "two"),
        ("PIONEER_WORKER_MEMORY_MIB", "255"),
        ("DISCOVERY_URL", "http://engine"),
        ("DISCOVERY_URL", "http://engine:50051/api"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        Settings.from_env({**KEY_ENV, name: value})
