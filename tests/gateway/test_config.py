"""Settings from the environment: defaults, the seed's URL forms, and loud failures."""

from __future__ import annotations

import pytest

from services.gateway.config import ConfigError, Settings

SECRET = {"DISCOVERY_AUTH_SECRET": "s" * 32}


def test_defaults() -> None:
    settings = Settings.from_env(SECRET)
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.engine_target == "localhost:50051"
    assert settings.max_body_bytes == 64 * 1024 * 1024
    assert settings.ws_max_message_bytes == 64 * 1024


@pytest.mark.parametrize(
    ("env", "target"),
    [
        ({"ENGINE_URL": "http://engine:6000"}, "engine:6000"),
        ({"ENGINE_URL": "engine:6000/"}, "engine:6000"),
        ({"DISCOVERY_ENGINE": "grpc://10.0.0.5:50051"}, "10.0.0.5:50051"),
        ({"ENGINE_URL": "a:1", "DISCOVERY_ENGINE": "b:2"}, "a:1"),
    ],
)
def test_engine_address_accepts_the_seed_url_forms(env: dict[str, str], target: str) -> None:
    assert Settings.from_env({**SECRET, **env}).engine_target == target


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_MAX_BODY_BYTES", "-1"),
        ("GATEWAY_WS_HEARTBEAT_SECONDS", "nan"),
        ("GATEWAY_SYNC_WAIT_SECONDS", "301"),
        ("ENGINE_URL", "http://engine"),
        ("GATEWAY_STREAM_QUEUE_MESSAGES", "0"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**SECRET, name: value})


def test_allowed_origins_are_a_list() -> None:
    settings = Settings.from_env(
        {**SECRET, "GATEWAY_WS_ALLOWED_ORIGINS": "https://a.example/, https://b"}
    )
    assert settings.ws_allowed_origins == ("https://a.example", "https://b")
