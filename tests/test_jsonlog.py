"""Every service's JSON log level comes from DISCOVERY_LOG_LEVEL."""

from __future__ import annotations

import logging

import pytest

from services import jsonlog


@pytest.fixture(autouse=True)
def _restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("raw", "level"),
    [("", logging.INFO), ("debug", logging.DEBUG), (" WARNING ", logging.WARNING)],
)
def test_the_level_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, level: int
) -> None:
    monkeypatch.setenv("DISCOVERY_LOG_LEVEL", raw)
    jsonlog.configure("test")
    assert logging.getLogger().level == level


def test_an_unknown_level_is_named_and_info_is_kept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISCOVERY_LOG_LEVEL", "chatty")
    jsonlog.configure("test")
    assert logging.getLogger().level == logging.INFO
    assert "DISCOVERY_LOG_LEVEL='chatty'" in capsys.readouterr().err
