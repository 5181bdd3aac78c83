"""Engine settings: the seed's variables work, a bad value names its variable."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.engine.config import ConfigError, Settings, advertised
from tests.stack import AUTH_KEYS, KEY_FILES

KEY_ENV = KEY_FILES


def test_defaults_and_the_keys_stay_out_of_logs() -> None:
    settings = Settings.from_env({**KEY_ENV, "ENGINE_PORT": "6000"})
    assert settings.port == 6000
    assert settings.engine_id.endswith(":6000")
    assert settings.mongodb_uri is None
    assert settings.auth_keys == AUTH_KEYS
    assert "auth_keys" not in repr(settings), "no key reaches a log line"


def test_other_engines_reach_this_one_at_its_advertised_address() -> None:
    bound = Settings.from_env({**KEY_ENV, "ENGINE_HOST": "0.0.0.0", "ENGINE_PORT": "0"})
    assert advertised(bound, 43210) == f"{socket.gethostname()}:43210"
    local = Settings.from_env({**KEY_ENV, "ENGINE_PORT": "0"})
    assert advertised(local, 43210) == "127.0.0.1:43210"
    given = {**KEY_ENV, "ENGINE_ADVERTISE_ADDRESS": "engine-2.internal:50051"}
    assert advertised(Settings.from_env(given), 43210) == "engine-2.internal:50051"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENGINE_PORT", "80000"),
        ("ENGINE_PORT", "eighty"),
        ("ENGINE_LEASE_SECONDS", "0.1"),
        ("ENGINE_MAX_CONCURRENT_RPCS", "0"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        Settings.from_env({**KEY_ENV, name: value})


def test_no_keys_no_engine(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"DISCOVERY_TRUSTED_KEYS_FILE is required"):
        Settings.from_env({})
    trusted = {"DISCOVERY_TRUSTED_KEYS_FILE": KEY_FILES["DISCOVERY_TRUSTED_KEYS_FILE"]}
    with pytest.raises(ConfigError, match=r"DISCOVERY_SIGNING_KEY_FILE is required"):
        Settings.from_env(trusted)
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"DISCOVERY_SIGNING_KEY_FILE=.*nope"):
        Settings.from_env({**trusted, "DISCOVERY_SIGNING_KEY_FILE": str(missing)})


def test_free_port_never_hands_out_one_port_twice_in_a_row() -> None:
    # The OS may give the same free port to consecutive binds; two services told one port
    # would meet each other's requests.
    from services.engine.store.embedded import free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
