"""The document steps' limits come from pioneer's environment, read once at start."""

from __future__ import annotations

import pytest

from services.envconfig import ConfigError
from services.pioneer.config import Settings
from services.pioneer.steps.documents import DocumentLimits
from tests.stack import KEY_FILES

KEY_ENV = KEY_FILES


def test_defaults_match_the_steps_own() -> None:
    settings = Settings.from_env(KEY_ENV)
    limits = DocumentLimits()
    assert settings.max_document_bytes == limits.max_document_bytes == 48 * 1024 * 1024
    assert settings.max_pdf_pages == limits.max_pages == 2000


def test_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {**KEY_ENV, "PIONEER_MAX_DOCUMENT_BYTES": "1048576", "PIONEER_MAX_PDF_PAGES": "50"}
    )
    assert (settings.max_document_bytes, settings.max_pdf_pages) == (1048576, 50)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIONEER_MAX_DOCUMENT_BYTES", "48MB"),
        ("PIONEER_MAX_DOCUMENT_BYTES", "0"),
        # The engine refuses blobs over 64 MiB: a larger limit could never be met.
        ("PIONEER_MAX_DOCUMENT_BYTES", str(64 * 1024 * 1024 + 1)),
        ("PIONEER_MAX_PDF_PAGES", "-1"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        Settings.from_env({**KEY_ENV, name: value})
