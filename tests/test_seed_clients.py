"""The seed's Python clients, as written, against the stack `make run` starts
(`python -m services.stack`, its own processes and secret): they send no token and see their
document workflow complete. The only change to each snippet is the gateway's port (8080 may
be taken here) and, where the seed leaves placeholders, the workflow id and the document.

Each snippet runs in its own interpreter with `requests`, as a user's script would."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.documents import pdfs
from tests.stack import MAKE_RUN_READY, free_port, start_make_run, wait_for

pytestmark = pytest.mark.timeout(120)

# "Ejemplo 2: Polling Simple", verbatim.
POLLING_SNIPPET = """
import time
import requests

def wait_for_completion(execution_id):
    while True:
        response = requests.get(f"http://localhost:8080/executions/{execution_id}/status")
        status = response.json()
        
        progress = status["progress"]
        print(f"Progreso: {progress['percentage']}% - Step: {status.get('current_step', {}).get('name', 'N/A')}")
        
        if progress["is_completed"]:
            return status["context"]  # Resultado final
        elif progress["is_failed"]:
            raise Exception("Workflow falló")
            
        time.sleep(2)
"""  # noqa: W293, E501 - the seed's own whitespace and line length

# How the seed starts a run before polling it (its JavaScript and httpx examples, in the
# polling example's `requests`), then the polling function as the seed calls it.
POLLING_DRIVER = """
import json, sys
document = json.load(open(sys.argv[1]))
response = requests.post("http://localhost:8080/execute-async/", json={
    "workflow_id": "tu-workflow-id",
    "data": document
})
assert response.status_code == 202, response.text
result = wait_for_completion(response.json()["execution_id"])
print("RESULT " + json.dumps(result))
"""

# "2. Modo Síncrono (Original, para workflows cortos)", verbatim but for `{...}`: the seed
# leaves the document out (in Python `{...}` is a set holding Ellipsis).
SYNC_SNIPPET = """
import json, sys
import requests
document = json.load(open(sys.argv[1]))

# Funciona como antes
response = requests.post("http://localhost:8080/execute/", json={
    "workflow_id": "tu-workflow-id", 
    "data": {...}
})
# Espera hasta que termine y devuelve resultado final
print("RESULT " + json.dumps({"status_code": response.status_code, "body": response.json()}))
"""  # noqa: W291 - the seed's own whitespace


@dataclass
class MakeRun:
    port: int
    workflow_id: str
    banner: str


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    """`make run`'s supervisor with its defaults, on free ports."""
    tmp = tmp_path_factory.mktemp("make-run")
    ports = {"ENGINE_PORT": free_port(), "PIONEER_PORT": free_port(), "GATEWAY_PORT": free_port()}
    log = tmp / "stack.log"
    stack = start_make_run(tmp / "data", log, **ports)
    try:
        banner = wait_for(log, MAKE_RUN_READY, 60)
        found = re.search(r"'Procesar Documentos' = ([0-9a-f-]{36})", banner)
        assert found, banner
        yield MakeRun(ports["GATEWAY_PORT"], found.group(1), banner)
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(30)


def run_snippet(make_run: MakeRun, source: str, tmp_path: Path) -> tuple[str, object]:
    """Runs the snippet in a fresh interpreter against the stack; (its output, its RESULT)."""
    source = source.replace("localhost:8080", f"localhost:{make_run.port}")
    source = source.replace("tu-workflow-id", make_run.workflow_id)
    source = source.replace('"data": {...}', '"data": document')
    document = tmp_path / "document.json"
    document.write_text(
        json.dumps(
            {
                "base64": base64.b64encode(pdfs.sectioned_pdf(3)).decode(),
                "mime": "application/pdf",
                "nombre_documento": "documento.pdf",
                "uuid_proceso": "proceso_123",
            }
        )
    )
    script = tmp_path / "client.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script), str(document)],
        capture_output=True,
        text=True,
        timeout=90,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(result) == 1, done.stdout
    return done.stdout, json.loads(result[0].removeprefix("RESULT "))


def test_make_run_admits_the_seed_clients_and_says_so(make_run: MakeRun) -> None:
    assert "without a token  admitted as client of tenant 'default'" in make_run.banner


def test_the_seed_polling_client_sees_its_document_processed(
    make_run: MakeRun, tmp_path: Path
) -> None:
    output, context = run_snippet(make_run, POLLING_SNIPPET + POLLING_DRIVER, tmp_path)
    assert isinstance(context, dict)
    assert context["execution_id"]
    assert context["dynamic_properties"], context
    lines = [line for line in output.splitlines() if line.startswith("Progreso: ")]
    # Its last poll found the run completed, at the workflow's last step.
    assert lines[-1] == "Progreso: 100.0% - Step: Finalizar", output


def test_the_seed_synchronous_client_gets_the_final_status(
    make_run: MakeRun, tmp_path: Path
) -> None:
    _, answer = run_snippet(make_run, SYNC_SNIPPET, tmp_path)
    assert isinstance(answer, dict)
    assert answer["status_code"] == 200, answer
    status = answer["body"]
    assert status["status"] == "completed" and status["progress"]["is_completed"]
    assert status["workflow_name"] == "Procesar Documentos"
    assert status["current_step"]["name"] == "Finalizar"
