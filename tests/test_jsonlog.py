"""Every service's JSON log lines: their level comes from DISCOVERY_LOG_LEVEL; a line about an
execution names it (`execution_id`) and the trace it belongs to (`trace_id`)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from services import jsonlog, tracing

ROOT = Path(__file__).resolve().parents[1]


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


def _line(logger: str = "services.engine.test", **extra: object) -> dict[str, object]:
    """What one call of `logger.info` writes, as JSON."""
    record = logging.getLogger(logger).makeRecord(
        logger, logging.INFO, __file__, 1, "something happened", (), None, extra=extra
    )
    line: dict[str, object] = json.loads(jsonlog.JsonFormatter("engine").format(record))
    return line


def test_a_line_outside_any_execution_names_none() -> None:
    line = _line()
    assert "execution_id" not in line and "trace_id" not in line
    assert line["service"] == "engine" and line["event"] == "something happened"


def test_a_line_about_an_execution_names_it_and_the_trace_of_its_start() -> None:
    with jsonlog.about("e-1", "4bf92f3577b34da6a3ce929d0e0e4736"):
        line = _line(step="parse")
    assert line["execution_id"] == "e-1"
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["step"] == "parse"
    with jsonlog.about("e-2"):
        assert "trace_id" not in _line()  # its start was not traced
    assert "execution_id" not in _line()  # only inside


def test_an_explicit_field_wins_and_another_executions_trace_is_not_borrowed() -> None:
    with jsonlog.about("e-1", "4bf92f3577b34da6a3ce929d0e0e4736"):
        line = _line(execution_id="e-9")
    assert line["execution_id"] == "e-9"
    assert "trace_id" not in line
    with jsonlog.about("e-1", "4bf92f3577b34da6a3ce929d0e0e4736"):
        assert _line(trace_id="explicit")["trace_id"] == "explicit"


def test_a_line_inside_a_span_carries_its_trace() -> None:
    tracer = tracing.new_provider("engine").get_tracer("test")
    with (
        jsonlog.about("e-1", "4bf92f3577b34da6a3ce929d0e0e4736"),
        tracer.start_as_current_span("call") as span,
    ):
        line = _line()
    # The line is written in the span's trace (a request's), not its execution's start.
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert line["execution_id"] == "e-1"


async def test_what_a_task_binds_stays_in_that_task() -> None:
    async def serve_one_call() -> dict[str, object]:
        jsonlog.bind("e-3")
        await asyncio.sleep(0)
        return _line()

    assert (await asyncio.create_task(serve_one_call()))["execution_id"] == "e-3"
    assert "execution_id" not in _line()


def test_every_service_logs_json_lines_through_jsonlog() -> None:
    """One format across services: each entry point configures jsonlog, under its name."""
    for service in ("engine", "pioneer", "gateway"):
        source = (ROOT / "services" / service / "__main__.py").read_text()
        assert f'jsonlog.configure("{service}")' in source, service
        assert f'tracing.configure("{service}")' in source, service


def test_a_coroutine_dropped_inside_is_closed_quietly() -> None:
    """A change left pending when its engine stops is closed by the garbage collector,
    outside the context it set (pytest would report an unraisable exception)."""

    async def change() -> None:
        with jsonlog.about("e-4"):
            await asyncio.Event().wait()

    loop = asyncio.new_event_loop()
    try:
        coroutine = change()
        task = loop.create_task(coroutine)
        loop.run_until_complete(asyncio.sleep(0))
        assert not task.done()
    finally:
        loop.close()
    coroutine.close()  # as the collector would, from this context
    assert "execution_id" not in _line()
