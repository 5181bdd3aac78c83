"""The embedded default: a SecantusDB server (MongoDB wire protocol, WiredTiger) as a child
process of whoever starts it.

Used when MONGODB_URI is unset, so that a new user needs nothing installed. It runs as its own
process, not a thread of the engine: SecantusDB is pure Python, and in the engine's process the
two shared one interpreter lock (74 % of an engine profile under load was the database). The
child dies with its parent (Linux PR_SET_PDEATHSIG), even when the parent is killed.

With `sync_on_commit` (the default) SecantusDB fsyncs its log at every commit. Without it,
a transaction's commit is acknowledged before its log record reaches the OS: a crash of the
database process loses the commits of its last moments (measured: the last 1-3 of a stream
of transactions), and the engine commits every event in a transaction (store/commits.py). Only
the benchmarks turn it off, to show what fsync costs. It is GPL-2.0-only and pre-release: a
development and single-machine default; production points MONGODB_URI at MongoDB.

    python -m services.engine.store.embedded --storage-path DIR --port N [--sync-on-commit]
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# The parent's pid, so that the child can tell that its parent died before it asked to be
# told (the parent may itself be pid 1 in a container).
PARENT_ENV = "DISCOVERY_DATABASE_PARENT"
START_SECONDS = 30.0
NOOP_HEARTBEAT_SECONDS = 10
# A transaction idle this long is aborted (SecantusDB's default is 60 s, as mongod's
# transactionLifetimeLimitSeconds; docker-compose.yml lowers that too). An engine killed or
# paused in the middle of a commit leaves the commit open, and it holds the engine's lease
# document: no other engine can fence that lease, and take its executions over, until the
# database drops the commit. Well under the default lease (ENGINE_LEASE_SECONDS, 15 s), so
# that a takeover waits for the lease alone; an engine sends a commit's statements back to
# back, never seconds apart.
TRANSACTION_IDLE_SECONDS = 5.0
PROJECT_ROOT = Path(__file__).resolve().parents[3]
# SecantusDB's own (secantus/storage.py): a redo log, recovered on open.
WIREDTIGER_CONFIG = "log=(enabled=true,file_max=10MB,prealloc=false)"


def mongo_uri(base: str) -> str:
    """With retryable writes on, SecantusDB scans its retry registry on every write and slows
    to a crawl within the hour; the engine retries at the level of its own commands."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}retryWrites=false"


# Ports this process handed out lately: the OS may give the same free port to two calls in a
# row, and two services told one port meet each other's requests.
_HANDED_OUT: deque[int] = deque(maxlen=256)


def free_port() -> int:
    """A loopback port free now and not handed out by this process lately (the OS may still
    give it to someone else before it is bound)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


class DatabaseProcess:
    """`secantusd-py` on `path`, as a child process.

    Start it from a thread that outlives it (the main thread, or the event loop's): the
    parent-death signal follows the thread that forked the child."""

    def __init__(self, path: Path, *, port: int = 0, sync_on_commit: bool = True) -> None:
        self.path = path
        self.port = port or free_port()
        self.sync_on_commit = sync_on_commit
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return mongo_uri(f"mongodb://127.0.0.1:{self.port}/")

    def start(self, seconds: float = START_SECONDS) -> str:
        """Starts the server and returns its URI once it accepts connections."""
        self._spawn()
        deadline = time.monotonic() + seconds
        while not self._accepting(deadline, seconds):
            time.sleep(0.05)
        return self.uri

    async def start_async(self, seconds: float = START_SECONDS) -> str:
        """`start`, without blocking the event loop while the server comes up."""
        self._spawn()
        deadline = time.monotonic() + seconds
        while not self._accepting(deadline, seconds):  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.05)
        return self.uri

    def _spawn(self) -> None:
        db = self.path / "db"
        db.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as out:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "services.engine.store.embedded"),
                    *("--storage-path", str(db), "--port", str(self.port)),
                    *("--log-level", "WARNING"),
                    # A quiet log's change feed keeps a resume token the server still has
                    # (mongod does the same every 10 s), so a hiccup never costs a resync.
                    *("--noop-heartbeat-seconds", str(NOOP_HEARTBEAT_SECONDS)),
                    *(["--sync-on-commit"] if self.sync_on_commit else []),
                ],
                # secantusd-py silently reads a ./secantusd.toml: its own folder has none.
                cwd=db,
                env={
                    **os.environ,
                    PARENT_ENV: str(os.getpid()),
                    # The child runs elsewhere (cwd): a relative PYTHONPATH would miss us.
                    "PYTHONPATH": os.pathsep.join(
                        [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]
                    ),
                },
                stdout=out,
                stderr=out,
            )

    def _accepting(self, deadline: float, seconds: float) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the embedded database exited with {self.process.returncode}: "
                f"{_tail(self._log_path)}"
            )
        # A local connect either succeeds or is refused at once: it does not block.
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
        ):
            return True
        if time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"the embedded database did not start within {seconds} s")
        return False

    @property
    def _log_path(self) -> Path:
        return self.path / "database.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, seconds: float = 30.0) -> None:
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def complete_half_created_tables(home: Path) -> list[str]:
    """Completes the tables a kill left half created in the WiredTiger store at `home`.

    WiredTiger writes a new table's metadata in steps (the table, its file, its column
    group), and a kill between them survives recovery: a table no cursor opens ("cannot be
    used until all column groups are created"). SecantusDB makes a collection's shard table
    at its first write, under load, and its recovery opens every shard: killed there once,
    the database never started again. Such a table never held a row (a write to it waits for
    its create to finish), so completing it loses nothing. Runs before the server opens the
    store (one process at a time may); the close checkpoints, so the server's own recovery
    finds nothing to replay. Returns the tables completed."""
    if not (home / "WiredTiger").exists():
        return []  # a new store
    import wiredtiger

    connection = wiredtiger.wiredtiger_open(str(home), WIREDTIGER_CONFIG)
    try:
        session = connection.open_session()
        cursor = session.open_cursor("metadata:", None, None)
        metadata = dict(cursor)
        cursor.close()
        # Only tables of one unnamed column group (`colgroups=` empty), as SecantusDB makes.
        half = [
            key.removeprefix("table:")
            for key, config in metadata.items()
            if key.startswith("table:")
            and ",colgroups=," in f",{config}"
            and f"colgroup:{key.removeprefix('table:')}" not in metadata
        ]
        for name in half:
            session.create(f"colgroup:{name}", "")
        return half
    finally:
        connection.close()


def _storage_path(argv: list[str]) -> Path | None:
    for flag, value in itertools.pairwise(argv):
        if flag == "--storage-path":
            return Path(value)
    return None


def main() -> int:
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        parent = os.environ.get(PARENT_ENV)
        if parent and os.getppid() != int(parent):
            return 1  # the parent died before the signal was asked for
    import secantus.cli

    storage = _storage_path(sys.argv[1:])
    if storage is not None:
        for table in complete_half_created_tables(storage):
            log.warning("completed table %s, half created when the database was killed", table)
    # secantusd-py has no flag for the transaction lifetime (0.7.0b3); its server takes one.
    secantus.cli.SecantusDBServer = functools.partial(
        secantus.cli.SecantusDBServer, transaction_lifetime_seconds=TRANSACTION_IDLE_SECONDS
    )
    return int(secantus.cli.main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
