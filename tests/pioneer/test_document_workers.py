"""Document work in worker processes: a call over its deadline has its worker killed, one that
needs too much memory fails saying so, and either way the next document is read normally.
Steps run through pioneer's gRPC API against the fake engine, with real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import json_format

from services.pioneer.errors import StepFailure
from services.pioneer.steps import documents
from tests.documents import pdfs
from tests.pioneer.fake_engine import FakeEngine
from tests.pioneer.harness import MakePioneer, Pioneer

pytestmark = pytest.mark.timeout(60)


def running(pid: int) -> bool:
    """Whether process `pid` exists, a zombie included (our own workers are reaped)."""
    return Path(f"/proc/{pid}").exists()


def ended(pid: int) -> bool:
    """Whether process `pid` has ended, reaped or not (another process reaps an orphan)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def appears(path: Path, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        # Polls: a worker process has no way to wake this loop (a stat of a local file does
        # not block it).
        while not path.exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.01)


async def read_a_document(pioneer: Pioneer, engine: FakeEngine, pages: int = 3) -> None:
    """validate_document on a good PDF succeeds."""
    engine.script.blobs["good-pdf"] = pdfs.sectioned_pdf(pages)
    request = await pioneer.start("validate_document", {"document": {"blob_id": "good-pdf"}})
    completion = await engine.completion(request.attempt_token)
    assert completion.success, completion.error.message
    assert json_format.MessageToDict(completion.result)["total_pages"] == pages


async def test_work_over_its_deadline_has_its_worker_killed_and_the_next_document_is_read(
    make_pioneer: MakePioneer, engine: FakeEngine, tmp_path: Path
) -> None:
    pioneer = await make_pioneer(document_workers=1)
    pid_file = tmp_path / "pid"
    request = await pioneer.start(
        "hostile_work", {"function": "spin", "seconds": 1, "pid_file": str(pid_file)}
    )
    completion = await engine.completion(request.attempt_token)

    assert not completion.success
    assert completion.error.reason == "invalid_input"
    assert completion.error.message.startswith("the document took more than 1 s to read it;")
    busy = int(pid_file.read_text())
    assert not running(busy), "the process that ran over its deadline still runs"
    # The one worker slot is free again, with a new worker.
    await read_a_document(pioneer, engine)
    assert pioneer.pool.pids() and busy not in pioneer.pool.pids()


async def test_work_over_its_memory_limit_fails_saying_so_and_the_next_document_is_read(
    make_pioneer: MakePioneer, engine: FakeEngine, tmp_path: Path
) -> None:
    pioneer = await make_pioneer(document_workers=1, worker_memory_mib=256)
    pid_file = tmp_path / "pid"
    request = await pioneer.start(
        "hostile_work", {"function": "allocate", "pid_file": str(pid_file)}
    )
    completion = await engine.completion(request.attempt_token)

    assert not completion.success
    assert completion.error.reason == "invalid_input"
    assert completion.error.message.startswith(
        "the document needed more than 256 MiB of memory to read it;"
    )
    assert not running(int(pid_file.read_text())), "the worker that ran out of memory still runs"
    await read_a_document(pioneer, engine)


async def test_a_worker_killed_by_the_system_fails_its_step_and_the_next_document_is_read(
    make_pioneer: MakePioneer, engine: FakeEngine, tmp_path: Path
) -> None:
    pioneer = await make_pioneer(document_workers=1)
    pid_file = tmp_path / "pid"
    request = await pioneer.start("hostile_work", {"function": "die", "pid_file": str(pid_file)})
    completion = await engine.completion(request.attempt_token)

    assert not completion.success
    # Not necessarily the document's fault: a plain failure, which the engine may retry.
    assert completion.error.reason == "step_failed"
    assert completion.error.message.startswith(
        "the worker process reading the document ended by signal SIGKILL while it was trying "
        "to read it;"
    )
    assert not running(int(pid_file.read_text()))
    await read_a_document(pioneer, engine)


async def test_a_step_stopped_mid_call_has_its_worker_killed(
    make_pioneer: MakePioneer, engine: FakeEngine, tmp_path: Path
) -> None:
    pioneer = await make_pioneer(document_workers=1)
    pid_file = tmp_path / "pid"
    request = await pioneer.start(
        "hostile_work", {"function": "spin", "pid_file": str(pid_file)}, step_timeout=2
    )
    completion = await engine.completion(request.attempt_token)
    await pioneer.idle()

    assert completion.error.reason == "timeout"
    assert not running(int(pid_file.read_text()))
    await read_a_document(pioneer, engine)


async def test_no_worker_outlives_the_pool(
    make_pioneer: MakePioneer, engine: FakeEngine, tmp_path: Path
) -> None:
    pioneer = await make_pioneer(document_workers=2)
    pid_file = tmp_path / "pid"
    # One worker busy with a call that never ends, one idle after reading a document.
    await pioneer.start("hostile_work", {"function": "spin", "pid_file": str(pid_file)})
    await appears(pid_file)
    await read_a_document(pioneer, engine)
    workers = pioneer.pool.pids()
    assert len(workers) == 2

    await pioneer.pool.close()

    assert not [pid for pid in workers if running(pid)]
    with pytest.raises(StepFailure, match=r"^pioneer is stopping"):
        async with pioneer.pool.lease():
            pass


async def test_waiting_for_a_free_worker_does_not_count_against_the_bound(
    make_pioneer: MakePioneer,
) -> None:
    pioneer = await make_pioneer(document_workers=1)
    leased = asyncio.Event()

    async def hold_the_only_worker() -> None:
        async with pioneer.pool.lease() as worker:
            leased.set()
            await worker.call(10, "sleep", time.sleep, 0.6)

    holder = asyncio.create_task(hold_the_only_worker())
    await leased.wait()
    started = time.monotonic()
    # Queued behind the 0.6 s call, then run at once: within its own 0.2 s.
    assert await documents.bounded_in_worker(pioneer.pool, 0.2, "open", len, b"abcd") == 4
    assert time.monotonic() - started >= 0.4
    await holder


ORPHANED = """
import asyncio, sys
from services.pioneer.workers import MIB, WorkerPool
from tests.pioneer import hostile

async def main() -> None:
    async with WorkerPool(1, 1024 * MIB).lease() as worker:
        await worker.call(60, "read it", hostile.spin, sys.argv[1])

asyncio.run(main())
"""


async def test_a_busy_worker_does_not_outlive_its_pioneer_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ORPHANED,
        str(pid_file),
        env={**os.environ, "PYTHONPATH": ":".join(sys.path)},
    )
    try:
        await appears(pid_file)
        worker = int(pid_file.read_text())
    finally:
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
    async with asyncio.timeout(10):
        # Polls: nothing tells this process when another process's orphan ends.
        while not ended(worker):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_an_idle_worker_that_died_is_replaced_not_leased(
    make_pioneer: MakePioneer, engine: FakeEngine
) -> None:
    pioneer = await make_pioneer(document_workers=1)
    await read_a_document(pioneer, engine)
    [idle] = pioneer.pool.pids()
    os.kill(idle, signal.SIGKILL)  # as the OOM killer might, between two documents
    async with asyncio.timeout(10):
        # Polls: the pool learns of the death from asyncio's child watcher, on its own time.
        while idle in pioneer.pool.pids():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await read_a_document(pioneer, engine)
