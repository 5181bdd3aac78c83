"""The embedded default: a SecantusDB server (MongoDB wire protocol, WiredTiger) in-process.

Used when MONGODB_URI is unset, so that a new user needs nothing installed. SecantusDB is
GPL-2.0-only and pre-release: a development and single-machine default; production points
MONGODB_URI at MongoDB.
"""

from __future__ import annotations

import logging
from pathlib import Path

from secantus import SecantusDBServer

log = logging.getLogger(__name__)


def mongo_uri(base: str) -> str:
    """With retryable writes on, SecantusDB scans its retry registry on every write and slows
    to a crawl within the hour; the engine retries at the level of its own commands."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}retryWrites=false"


class EmbeddedMongo:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "db"
        self.path.mkdir(parents=True, exist_ok=True)
        self._server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=str(self.path))

    def start(self) -> str:
        self._server.start()
        log.info("embedded database started", extra={"path": str(self.path)})
        return mongo_uri(self._server.uri)

    def stop(self) -> None:
        self._server.stop()
