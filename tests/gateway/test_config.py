"""Settings from the environment: defaults, the seed's URL forms, and loud failures."""

from __future__ import annotations

import pytest

from services.gateway.app import create_app
from services.gateway.config import ConfigError, Settings
from tests.stack import AUTH_KEYS, KEY_FILES

KEY_ENV = KEY_FILES


def test_defaults() -> None:
    settings = Settings.from_env(KEY_ENV)
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
    assert Settings.from_env({**KEY_ENV, **env}).engine_target == target


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_MAX_BODY_BYTES", "-1"),
        # Deeper than the engine and protobuf take: a 500 waiting to happen.
        ("GATEWAY_MAX_JSON_DEPTH", "33"),
        ("GATEWAY_WS_HEARTBEAT_SECONDS", "nan"),
        ("GATEWAY_SYNC_WAIT_SECONDS", "301"),
        ("ENGINE_URL", "http://engine"),
        ("GATEWAY_STREAM_QUEUE_MESSAGES", "0"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**KEY_ENV, name: value})


def test_allowed_origins_are_a_list() -> None:
    settings = Settings.from_env(
        {**KEY_ENV, "GATEWAY_WS_ALLOWED_ORIGINS": "https://a.example/, https://b"}
    )
    assert settings.ws_allowed_origins == ("https://a.example", "https://b")


def test_anonymous_access_is_off_unless_asked_for() -> None:
    settings = Settings.from_env(KEY_ENV)
    assert settings.anonymous_access is False
    assert (settings.anonymous_tenant, settings.anonymous_role) == ("default", "client")
    assert settings.cors_origins == () and settings.ws_allowed_origins == ()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_anonymous_access_on_loopback_as_a_client_of_a_named_tenant(host: str) -> None:
    settings = Settings.from_env(
        {
            **KEY_ENV,
            "GATEWAY_HOST": host,
            "GATEWAY_ANONYMOUS_ACCESS": "true",
            "GATEWAY_ANONYMOUS_TENANT": "legacy",
        }
    )
    assert settings.anonymous_access is True
    assert (settings.anonymous_tenant, settings.anonymous_role) == ("legacy", "client")


@pytest.mark.parametrize("role", ["admin", "runner", "engine", "watcher", "root"])
def test_anonymous_access_is_never_more_than_a_client(role: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ANONYMOUS_ROLE") as refused:
        Settings.from_env(
            {**KEY_ENV, "GATEWAY_ANONYMOUS_ACCESS": "true", "GATEWAY_ANONYMOUS_ROLE": role}
        )
    assert "client" in str(refused.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.example.com"])
def test_anonymous_access_on_a_reachable_address_needs_a_trusted_network(host: str) -> None:
    env = {**KEY_ENV, "GATEWAY_ANONYMOUS_ACCESS": "true", "GATEWAY_HOST": host}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    for name in ("GATEWAY_ANONYMOUS_ACCESS", "GATEWAY_HOST", "GATEWAY_TRUSTED_NETWORK"):
        assert name in str(refused.value)
    trusted = Settings.from_env({**env, "GATEWAY_TRUSTED_NETWORK": "true"})
    assert trusted.anonymous_access and trusted.host == host
    # Without anonymous access any address is fine, as before.
    assert Settings.from_env({**KEY_ENV, "GATEWAY_HOST": host}).host == host


def test_settings_made_in_code_are_held_to_the_same_rule() -> None:
    reachable = Settings(host="0.0.0.0", anonymous_access=True, auth_keys=AUTH_KEYS)
    with pytest.raises(ConfigError, match="GATEWAY_TRUSTED_NETWORK"):
        create_app(reachable)
    with pytest.raises(ConfigError, match="GATEWAY_ANONYMOUS_ROLE"):
        create_app(Settings(anonymous_access=True, anonymous_role="admin", auth_keys=AUTH_KEYS))


def test_cors_origins_are_a_list_and_the_websocket_list_follows_them() -> None:
    settings = Settings.from_env(
        {**KEY_ENV, "GATEWAY_CORS_ORIGINS": "http://localhost:3000/, https://app.example"}
    )
    assert settings.cors_origins == ("http://localhost:3000", "https://app.example")
    assert settings.ws_allowed_origins == settings.cors_origins
    own = Settings.from_env(
        {
            **KEY_ENV,
            "GATEWAY_CORS_ORIGINS": "http://localhost:3000",
            "GATEWAY_WS_ALLOWED_ORIGINS": "https://b.example",
        }
    )
    assert own.ws_allowed_origins == ("https://b.example",)


@pytest.mark.parametrize(
    "value", ["*", "localhost:3000", "http://a.example/path", "ftp://a.example", "http://"]
)
def test_a_cors_origin_must_be_an_origin(value: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_CORS_ORIGINS"):
        Settings.from_env({**KEY_ENV, "GATEWAY_CORS_ORIGINS": value})
