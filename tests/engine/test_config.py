"""Engine settings: the seed's variables work, a bad value names its variable."""

from __future__ import annotations

import pytest

from services.engine.config import ConfigError, Settings


def test_seed_style_urls_and_lists_are_understood() -> None:
    settings = Settings.from_env(
        {"PIONEER_URL": "http://localhost:8000, pioneer-2:50052/", "ENGINE_PORT": "6000"}
    )
    assert settings.pioneer_targets == ("localhost:8000", "pioneer-2:50052")
    assert settings.port == 6000
    assert settings.engine_id.endswith(":6000")
    assert settings.mongodb_uri is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENGINE_PORT", "80000"),
        ("ENGINE_PORT", "eighty"),
        ("ENGINE_LEASE_SECONDS", "0.1"),
        ("ENGINE_MAX_CONCURRENT_RPCS", "0"),
        ("PIONEER_URL", "pioneer"),
        ("PIONEER_URL", " , "),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        Settings.from_env({name: value})
