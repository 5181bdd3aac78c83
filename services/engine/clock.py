"""The engine's clock.

Times are cut to whole milliseconds, the precision MongoDB keeps, so that an event a watcher
receives live is identical to the same event replayed from the database.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
