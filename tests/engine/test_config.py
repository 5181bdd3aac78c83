"""Engine settings: the seed's variables work, a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.engine.config import ConfigError, Settings

SECRET = {"DISCOVERY_AUTH_SECRET": "s" * 32}


def test_defaults_and_the_secret_stay_out_of_logs() -> None:
    settings = Settings.from_env({**SECRET, "ENGINE_PORT": "6000"})
    assert settings.port == 6000
    assert settings.engine_id.endswith(":6000")
    assert settings.mongodb_uri is None
    assert settings.auth_keys == (b"s" * 32,)
    assert "auth_keys" not in repr(settings), "the secret never reaches a log line"
    # The embedded database fsyncs at every commit unless told not to.
    assert settings.embedded_fsync
    assert not Settings.from_env({**SECRET, "DISCOVERY_DB_FSYNC": "false"}).embedded_fsync


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENGINE_PORT", "80000"),
        ("ENGINE_PORT", "eighty"),
        ("ENGINE_LEASE_SECONDS", "0.1"),
        ("ENGINE_MAX_CONCURRENT_RPCS", "0"),
        ("DISCOVERY_DB_FSYNC", "sometimes"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        Settings.from_env({**SECRET, name: value})


def test_no_secret_no_engine(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"DISCOVERY_AUTH_SECRET_FILE .* is required"):
        Settings.from_env({})
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Settings.from_env({"DISCOVERY_AUTH_SECRET": "short"})
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"DISCOVERY_AUTH_SECRET_FILE=.*nope"):
        Settings.from_env({"DISCOVERY_AUTH_SECRET_FILE": str(missing)})
    rotated = tmp_path / "keys"
    rotated.write_text("n" * 40 + "\n\n" + "o" * 32 + "\n")
    keys = Settings.from_env({"DISCOVERY_AUTH_SECRET_FILE": str(rotated)}).auth_keys
    assert keys == (b"n" * 40, b"o" * 32), "one secret per line; the first one signs"


def test_free_port_never_hands_out_one_port_twice_in_a_row() -> None:
    # The OS may give the same free port to consecutive binds; two services told one port
    # would meet each other's requests.
    from services.engine.store.embedded import free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
