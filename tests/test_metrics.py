"""Every service's `/metrics`, scraped from the stack `make run` starts (its own processes,
each on its metrics port) after one document run, and read with prometheus-client's own
parser: the run is counted once, by workflow, handler and outcome; no label holds an
execution id."""

from __future__ import annotations

import base64
import json
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.envconfig import ConfigError
from services.metrics import MetricsServer, new_registry
from tests.documents import pdfs
from tests.stack import MAKE_RUN_READY, free_port, start_make_run, wait_for

pytestmark = pytest.mark.timeout(120)

WORKFLOW = "Procesar Documentos"
# The document workflow's steps and their handlers (services/pioneer/workflows.py).
HANDLERS = 5


def scrape(port: int) -> dict[str, list[Sample]]:
    """Samples by name (counters as `…_total`, histograms as `…_count` and `…_bucket`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def total(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(key) == value for key, value in labels.items())
    )


def call(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as reply:
        result: dict[str, object] = json.load(reply)
        return result


def test_each_service_serves_its_metrics_after_a_document_run(tmp_path: Path) -> None:
    ports = {
        name: free_port()
        for name in (
            "ENGINE_PORT",
            "PIONEER_PORT",
            "GATEWAY_PORT",
            "ENGINE_METRICS_PORT",
            "PIONEER_METRICS_PORT",
            "GATEWAY_METRICS_PORT",
        )
    }
    log = tmp_path / "stack.log"
    stack = start_make_run(tmp_path / "data", log, **ports)
    try:
        banner = wait_for(log, MAKE_RUN_READY, 60)
        for service in ("engine", "pioneer", "gateway"):
            port = ports[f"{service.upper()}_METRICS_PORT"]
            assert f"{service} http://127.0.0.1:{port}/metrics" in banner
        gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        workflows = call(f"{gateway}/workflows")["workflows"]
        assert isinstance(workflows, list)
        workflow_id = next(w["workflow_id"] for w in workflows if w["name"] == WORKFLOW)
        document = {
            "base64": base64.b64encode(pdfs.sectioned_pdf(3)).decode(),
            "mime": "application/pdf",
            "nombre_documento": "documento.pdf",
            "uuid_proceso": "proceso_123",
        }
        started = call(f"{gateway}/execute-async/", {"workflow_id": workflow_id, "data": document})
        execution_id = str(started["execution_id"])
        deadline = time.monotonic() + 60
        while True:
            status = call(f"{gateway}/executions/{execution_id}/status")
            progress = status["progress"]
            assert isinstance(progress, dict)
            if progress["is_completed"] or progress["is_failed"]:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert progress["is_completed"], status

        engine = scrape(ports["ENGINE_METRICS_PORT"])
        assert total(engine, "discovery_executions_started_total", workflow=WORKFLOW) == 1
        assert (
            total(engine, "discovery_executions_finished_total", workflow=WORKFLOW)
            == total(
                engine,
                "discovery_executions_finished_total",
                workflow=WORKFLOW,
                outcome="completed",
            )
            == 1
        )
        assert total(engine, "discovery_execution_duration_seconds_count") == 1
        assert total(engine, "discovery_step_attempts_total", outcome="success") == HANDLERS
        assert total(engine, "discovery_step_duration_seconds_count") == HANDLERS
        assert total(engine, "discovery_step_queue_wait_seconds_count") == HANDLERS
        assert total(engine, "discovery_step_retries_total") == 0
        assert total(engine, "discovery_event_log_commit_seconds_count") >= 1
        assert total(engine, "discovery_event_log_commit_events_sum") >= HANDLERS * 3
        assert "discovery_watchers" in engine
        assert "discovery_executions_held" in engine
        assert "discovery_step_queue_pollers" in engine
        assert total(engine, "discovery_step_queue_depth") == 0
        assert "process_resident_memory_bytes" in engine

        pioneer = scrape(ports["PIONEER_METRICS_PORT"])
        assert total(pioneer, "discovery_pioneer_attempts_total", outcome="success") == HANDLERS
        assert total(pioneer, "discovery_pioneer_step_duration_seconds_count") == HANDLERS
        assert total(pioneer, "discovery_pioneer_slots") > 0
        assert total(pioneer, "discovery_pioneer_slots_in_use") == 0

        gateway_samples = scrape(ports["GATEWAY_METRICS_PORT"])
        assert (
            total(
                gateway_samples,
                "discovery_gateway_requests_total",
                route="/execute-async/",
                method="POST",
                status="202",
            )
            == 1
        )
        assert (
            total(
                gateway_samples,
                "discovery_gateway_requests_total",
                route="/executions/{execution_id}/status",
            )
            >= 1
        )
        assert "discovery_gateway_streams" in gateway_samples

        # Ids never become labels: series stay bounded whatever runs.
        for samples in (engine, pioneer, gateway_samples):
            for values in samples.values():
                for sample in values:
                    assert not any(execution_id in v for v in sample.labels.values()), sample
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(30)


def test_a_metrics_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "stack.log"
        ports = {
            "ENGINE_PORT": free_port(),
            "PIONEER_PORT": free_port(),
            "GATEWAY_PORT": free_port(),
            "ENGINE_METRICS_PORT": free_port(),
            "PIONEER_METRICS_PORT": port,
            "GATEWAY_METRICS_PORT": free_port(),
        }
        stack = start_make_run(tmp_path / "data", log, **ports)
        assert stack.wait(30) == 2
    assert f"ports in use: pioneer {port} " in log.read_text()


def test_a_service_refuses_to_start_on_a_metrics_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(new_registry(), "127.0.0.1", port, "ENGINE_METRICS_PORT")
        with pytest.raises(ConfigError, match=f"ENGINE_METRICS_PORT={port}: the port is in use"):
            server.start()
    off = MetricsServer(new_registry(), "127.0.0.1", 0, "ENGINE_METRICS_PORT")
    off.start()
    assert off.port == 0  # 0: not served
    off.stop()
