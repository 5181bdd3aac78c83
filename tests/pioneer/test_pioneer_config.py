"""Settings from the environment: defaults, the seed's URL form, and loud failures."""

from __future__ import annotations

import pytest

from services.envconfig import ConfigError
from services.pioneer.config import Settings

SECRET = {"DISCOVERY_AUTH_SECRET": "s" * 32}
KEYS = (b"s" * 32,)


def test_defaults() -> None:
    assert Settings.from_env(SECRET) == Settings(
        host="127.0.0.1",
        port=50052,
        discovery_url="localhost:50051",
        max_concurrent_steps=64,
        auth_keys=KEYS,
    )


def test_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            **SECRET,
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
    "url", ["http://engine:50051", "http://engine:50051/", "grpc://engine:50051"]
)
def test_the_seeds_url_form_loses_its_scheme(url: str) -> None:
    assert Settings.from_env({**SECRET, "DISCOVERY_URL": url}).discovery_url == "engine:50051"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIONEER_PORT", "http"),
        ("PIONEER_PORT", "70000"),
        ("PIONEER_MAX_CONCURRENT_STEPS", "0"),
        ("DISCOVERY_URL", "http://engine"),
        ("DISCOVERY_URL", "http://engine:50051/api"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        Settings.from_env({**SECRET, name: value})
