"""Worker processes for the document steps' CPU-heavy work on hostile input (pypdf, section
finding): each call has a hard deadline, and each worker a memory limit.

A step leases one worker for its whole run (`async with pool.lease() as worker`) and makes its
calls on it (`await worker.call(seconds, what, function, *args)`): the function and arguments
are pickled to the worker, its result or exception pickled back. Between the calls of one lease
the worker keeps `session` (extract_text opens the PDF once, then reads it page by page); the
session is dropped when the lease ends.

- A call over its deadline, or whose step is cancelled, has its worker killed (SIGKILL) and
  reaped, and the pool starts another when one is next needed. A thread could only have been
  abandoned, still running and holding all that pypdf had decoded.
- A worker limits its own address space (RLIMIT_AS) before its first call: a document that
  needs more meets MemoryError, the step fails saying so, and the worker is replaced.
- Workers are fresh interpreters (`python -m services.pioneer.workers`, as multiprocessing's
  'spawn' starts them), never forks of pioneer: forking a process that runs gRPC's threads is
  unsafe. They talk over their stdin and stdout, so a call is awaited as plain asyncio I/O (no
  thread blocked on it), and a worker whose pioneer is gone reads end-of-file and exits.

Not pebble's ProcessPool: it sends each call to whichever worker is free, so extract_text would
have to send the document (up to 64 MiB) and reopen it for every page.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import os
import pickle
import resource
import signal
import struct
import sys
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, ParamSpec, TypeVar, cast

from services import jsonlog
from services.pioneer.errors import InvalidInput, StepFailure

P = ParamSpec("P")
T = TypeVar("T")

MIB = 1024 * 1024
# Starting an interpreter; far less unless the machine is loaded.
START_SECONDS = 30.0
# Dropping a session between leases: the worker only clears a dict.
END_SECONDS = 10.0
# At shutdown, an idle worker is given this long to exit by itself before it is killed.
STOP_GRACE_SECONDS = 2.0
_HEADER = struct.Struct("!Q")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# In a worker: what the calls of its current lease share (see the module's docstring).
session: dict[str, Any] = {}


class WorkerPool:
    """At most `size` workers, each leased to one step at a time; started when first needed
    and kept between leases, replaced when killed."""

    def __init__(self, size: int, memory_bytes: int, preload: tuple[str, ...] = ()) -> None:
        self.size = size
        self.memory_bytes = memory_bytes
        # Modules each worker imports before its first call, so the calls' time bounds do
        # not include importing them.
        self.preload = preload
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Worker] = []
        self._leased: set[Worker] = set()
        self._closed = False

    def pids(self) -> set[int]:
        """The worker processes running now, leased or idle."""
        return {worker.pid for worker in [*self._idle, *self._leased] if worker.alive}

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Worker]:
        async with self._slots:
            if self._closed:
                raise StepFailure("pioneer is stopping: its document workers are shut down")
            worker = await self._take()
            self._leased.add(worker)
            try:
                yield worker
            finally:
                self._leased.discard(worker)
                await self._give_back(worker)

    async def _take(self) -> Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            # Died idle (the system's OOM killer, an operator): not the next step's doing.
            await worker.reaped()
        return await Worker.start(self.memory_bytes, self.preload)

    async def _give_back(self, worker: Worker) -> None:
        if worker.alive and not self._closed:
            try:
                async with asyncio.timeout(END_SECONDS):
                    await worker.end_session()
            except Exception:
                pass  # killed below
            except BaseException:
                worker.kill()
                raise
            else:
                self._idle.append(worker)
                return
        worker.kill()
        await worker.reaped()

    async def close(self) -> None:
        """Stops every worker and waits until each is gone; leases after this fail."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in self._leased:
            worker.kill()
        await asyncio.gather(
            *(worker.stop() for worker in idle), *(worker.reaped() for worker in self._leased)
        )


class Worker:
    """One worker process, as its pioneer sees it."""

    def __init__(self, process: asyncio.subprocess.Process, memory_bytes: int) -> None:
        self._process = process
        self.pid = process.pid
        self._memory_bytes = memory_bytes
        self._killed = False

    @classmethod
    async def start(cls, memory_bytes: int, preload: tuple[str, ...] = ()) -> Worker:
        # The worker imports what the calls name as pioneer does: with pioneer's sys.path.
        path = os.pathsep.join(entry or os.getcwd() for entry in sys.path)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(memory_bytes),
            str(os.getpid()),
            *preload,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        worker = cls(process, memory_bytes)
        try:
            async with asyncio.timeout(START_SECONDS):
                await worker._receive()
        except BaseException as exc:
            worker.kill()
            await asyncio.shield(worker.reaped())
            if isinstance(exc, Exception):
                raise StepFailure(
                    f"a document worker did not start ({type(exc).__name__}: {exc})"
                ) from exc
            raise
        return worker

    @property
    def alive(self) -> bool:
        return not self._killed and self._process.returncode is None

    async def call(
        self, seconds: float, what: str, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`function(*args, **kwargs)` in this worker, refused as a hostile document once it has
        run `seconds`, or needed more memory than the worker's limit."""
        message = pickle.dumps(("call", function, args, kwargs), pickle.HIGHEST_PROTOCOL)
        try:
            async with asyncio.timeout(seconds):
                status, value = await self._exchange(message)
        except TimeoutError:
            self.kill()
            await self.reaped()
            raise InvalidInput(
                f"the document took more than {seconds:g} s to {what}; it may be damaged or "
                "built to exhaust PDF readers"
            ) from None
        except (EOFError, ConnectionError):
            raise await self._lost(what) from None
        except BaseException:
            # Cancelled mid-call: its answer would arrive in the middle of the next call.
            self.kill()
            raise
        if status == "memory":
            # It may have failed half-way through something; a fresh worker is sure.
            self.kill()
            await self.reaped()
            raise InvalidInput(
                f"the document needed more than {self._memory_bytes / MIB:g} MiB of memory to "
                f"{what}; it may be damaged or built to exhaust PDF readers"
            )
        if status == "error":
            raise value
        # What `function` returned, through pickle: typed as the function says it returns.
        return cast(T, value)

    async def end_session(self) -> None:
        await self._exchange(pickle.dumps(("end",)))

    def kill(self) -> None:
        # Once: a worker already reaped may have passed its pid on to another process.
        if not self.alive:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    async def reaped(self) -> int:
        return await self._process.wait()

    async def stop(self) -> None:
        """Lets the worker exit by itself (it reads end-of-file), killed if it does not."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                await self.reaped()
        except TimeoutError:
            self.kill()
            await self.reaped()

    async def _lost(self, what: str) -> StepFailure:
        """The failure of a call whose worker closed its pipes: it has died, most likely."""
        try:
            # Not killed at once: killing polls the process, and a poll that reaps it first
            # leaves asyncio only "unknown child, status 255" to report.
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                code = await self.reaped()
        except TimeoutError:
            self.kill()
            code = await self.reaped()
        self._killed = True
        # Killed from outside: not necessarily the document's doing, so a plain step failure,
        # which the engine may retry.
        cause = "; the system may have run out of memory" if code == -signal.SIGKILL else ""
        how = f"by signal {_signal_name(-code)}" if code < 0 else f"with status {code}"
        return StepFailure(
            f"the worker process reading the document ended {how} while it was trying to "
            f"{what}{cause}"
        )

    async def _exchange(self, message: bytes) -> tuple[str, Any]:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(_HEADER.pack(len(message)))
        stdin.write(message)
        await stdin.drain()
        return await self._receive()

    async def _receive(self) -> tuple[str, Any]:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            (size,) = _HEADER.unpack(await stdout.readexactly(_HEADER.size))
            reply: tuple[str, Any] = pickle.loads(await stdout.readexactly(size))
        except asyncio.IncompleteReadError:
            raise EOFError("the worker closed its output") from None
        return reply


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


# --- the worker process -----------------------------------------------------------------------


def serve(memory_bytes: int, parent: int, preload: list[str]) -> None:
    """A worker's life: limit its memory, then answer calls until its stdin ends."""
    jsonlog.configure("pioneer")  # what pypdf logs, as pioneer logs it
    for module in preload:
        importlib.import_module(module)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory_bytes = min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, hard))
    # Ctrl-C in pioneer's terminal reaches its whole process group: pioneer stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    inbox = sys.stdin.buffer
    outbox = os.fdopen(os.dup(1), "wb")
    # What a library prints goes to stderr, not into the replies.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _send(outbox, ("ready", os.getpid()))
    while (raw := _read_message(inbox)) is not None:
        reply = _answer(raw)
        del raw
        _send(outbox, reply)
        del reply


def _die_with_parent(parent: int) -> None:
    """Killed when pioneer dies, even in the middle of a call: no one else would bound it.
    (An idle worker reads end-of-file and exits anyway.) Linux only: prctl(PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        # pioneer died before the prctl call took effect.
        raise SystemExit("pioneer is gone")


def _answer(raw: bytes) -> tuple[str, Any]:
    try:
        message = pickle.loads(raw)
        if message[0] == "end":
            session.clear()
            gc.collect()
            return ("ok", None)
        _, function, args, kwargs = message
        del message
        return ("ok", function(*args, **kwargs))
    except MemoryError:
        return ("memory", None)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))  # as pioneer will
        except Exception:
            return ("error", StepFailure(f"{type(exc).__name__}: {exc}"))
        return ("error", exc)


def _read_message(inbox: IO[bytes]) -> bytes | None:
    header = inbox.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    return inbox.read(size)


def _send(outbox: IO[bytes], reply: tuple[str, Any]) -> None:
    data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    outbox.write(_HEADER.pack(len(data)) + data)
    outbox.flush()


if __name__ == "__main__":
    # Run as the imported module, not as __main__: the calls' functions share its `session`.
    from services.pioneer.workers import serve as serve_imported

    serve_imported(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
