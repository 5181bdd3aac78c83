"""Fixtures the fault tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.engine.store.embedded import DatabaseProcess


@pytest.fixture
def database_process(tmp_path: Path) -> Iterator[DatabaseProcess]:
    """A database server of the test's own, which the test may kill and start again."""
    db = DatabaseProcess(tmp_path)
    db.start()
    yield db
    db.stop()
