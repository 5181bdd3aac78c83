"""Document work that never ends well, run by the `hostile_work` test step on the path the
document steps' pypdf calls take. Each writes the id of the process it runs in to `pid_file`
first, so that a test can check that process is gone afterwards."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MIB = 1024 * 1024


def spin(pid_file: str) -> None:
    """Busy as a parser in a loop would be; gives up after a minute, far past any test."""
    Path(pid_file).write_text(str(os.getpid()))
    end = time.monotonic() + 60
    while time.monotonic() < end:
        pass


def allocate(pid_file: str) -> None:
    """Allocates without bound, as pypdf keeping every stream it decoded would."""
    Path(pid_file).write_text(str(os.getpid()))
    # bytes(n) is calloc'ed: address space grows, but the pages are never touched.
    hoard = []
    while True:
        hoard.append(bytes(64 * MIB))


def die(pid_file: str) -> None:
    """Killed as the kernel's OOM killer would kill it."""
    Path(pid_file).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
