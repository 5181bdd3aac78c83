"""`discovery workflows create|list|show` against a real engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from discovery.engine.v1 import workflow_service_pb2 as ws

from services.auth import CLIENT
from tests.cli.cli import assert_readable_error, call_main, run_cli
from tests.stack import AUTHORITY, Stack, token

DEFINITION = """\
name: Revisar contrato
description: a nap, then an echo
steps:
  - name: leer
    handler: sleep
    timeout_seconds: 120
    heartbeat_timeout_seconds: 10
    retry:
      max_attempts: 2
      initial_backoff_seconds: 0.5
      backoff_multiplier: 3
  - name: responder
    handler: echo
"""


async def test_create_from_yaml_then_list_and_show(
    stack: Stack, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "contrato.yaml"
    path.write_text(DEFINITION)

    created = await run_cli(target, "workflows", "create", "-f", str(path))

    assert created.code == 0, created
    workflow_id = created.out.strip()
    reply: ws.GetWorkflowResponse = await stack.client.workflows.GetWorkflow(
        ws.GetWorkflowRequest(workflow_id=workflow_id), timeout=10
    )
    stored = reply.workflow
    assert stored.name == "Revisar contrato"
    assert [(s.name, s.handler) for s in stored.steps] == [("leer", "sleep"), ("responder", "echo")]
    leer = stored.steps[0]
    assert (leer.timeout_seconds, leer.heartbeat_timeout_seconds) == (120, 10)
    assert (leer.retry.max_attempts, leer.retry.initial_backoff_seconds) == (2, 0.5)
    assert leer.retry.backoff_multiplier == 3

    listed = await call_main(capsys, ["--engine", target, "workflows", "list"])
    assert listed.code == 0, listed
    assert workflow_id in listed.out and "Revisar contrato" in listed.out
    assert "leer → responder" in listed.out

    as_json = await call_main(capsys, ["workflows", "list", "--json", "--engine", target])
    [only] = as_json.json_lines()[0]["workflows"]
    assert only["workflow_id"] == workflow_id
    assert [s["handler"] for s in only["steps"]] == ["sleep", "echo"]

    # By exact name, as a user remembers it, and by id.
    shown = await call_main(capsys, ["--engine", target, "workflows", "show", "Revisar contrato"])
    assert shown.code == 0, shown
    assert workflow_id in shown.out
    for expected in ("leer", "responder", "sleep", "echo", "2 min 0 s", "2 attempts"):
        assert expected in shown.out, (expected, shown.out)
    by_id = await call_main(
        capsys, ["--engine", target, "workflows", "show", workflow_id, "--json"]
    )
    assert by_id.json_lines()[0]["name"] == "Revisar contrato"


async def test_a_handler_no_pioneer_offers_is_refused_with_the_field_named(
    target: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nsteps:\n  - name: a\n    handler: sleep\n  - name: b\n    handler: nope\n"
    )

    result = await run_cli(target, "workflows", "create", "-f", str(path))

    assert_readable_error(result)
    assert "steps[1].handler" in result.err and "'nope'" in result.err
    assert "INVALID_ARGUMENT" in result.err
    assert result.out == ""


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"name": "x", "steps": [{"name": "a", "handlr": "sleep"}]}', "steps[0].handlr"),
        (
            '{"name": "x", "steps": [{"name": "a", "handler": "sleep", '
            '"timeout_seconds": "soon"}]}',
            "steps[0].timeout_seconds",
        ),
        ("name: x\nsteps: []\n", "steps"),  # the engine's check: at least one step
        ("name: [unclosed\n", "not valid YAML or JSON"),
    ],
)
async def test_a_malformed_definition_exits_2_naming_the_problem(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    path = tmp_path / "definition.json"
    path.write_text(text)

    result = await call_main(capsys, ["--engine", target, "workflows", "create", "-f", str(path)])

    assert_readable_error(result)
    assert named in result.err, result.err
    assert str(path) in result.err


async def test_an_unknown_workflow_is_a_readable_error(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await call_main(capsys, ["--engine", target, "workflows", "show", "no such thing"])

    assert_readable_error(result)
    assert "no such thing" in result.err


async def test_without_credentials_the_cli_says_where_to_get_them(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    target: str,
) -> None:
    monkeypatch.delenv("DISCOVERY_TOKEN")
    monkeypatch.chdir(tmp_path)  # no .discovery/token here
    result = await call_main(capsys, ["workflows", "list", "--engine", target])
    assert_readable_error(result)
    assert "DISCOVERY_TOKEN" in result.err and ".discovery/token" in result.err

    (tmp_path / ".discovery").mkdir()
    (tmp_path / ".discovery" / "token").write_text(token(CLIENT) + "\n")
    listed = await call_main(capsys, ["workflows", "list", "--engine", target, "--json"])
    assert listed.code == 0, listed

    monkeypatch.setenv("DISCOVERY_TOKEN", token(CLIENT))
    definition = tmp_path / "contrato.yaml"
    definition.write_text(DEFINITION)
    refused = await call_main(
        capsys, ["workflows", "create", "-f", str(definition), "--engine", target]
    )
    assert_readable_error(refused)
    assert "PERMISSION_DENIED" in refused.err or "may not" in refused.err, refused.err


async def test_an_operator_issues_tokens_for_each_role(capsys: pytest.CaptureFixture[str]) -> None:
    issued = await call_main(capsys, ["token", "--role", "runner", "--tenant", "acme"])
    assert issued.code == 0, issued
    principal = AUTHORITY.verify(issued.out.strip())
    assert (principal.role, principal.tenant, principal.subject) == (
        "runner",
        "acme",
        "runner@acme",
    )
    assert 29 * 86400 < principal.seconds_left() <= 30 * 86400

    scoped = await call_main(
        capsys, ["token", "--role", "watcher", "--execution", "e-1", "--ttl", "60"]
    )
    assert AUTHORITY.verify(scoped.out.strip()).execution_id == "e-1"
    unscoped = await call_main(capsys, ["token", "--role", "watcher"])
    assert_readable_error(unscoped)


async def test_create_applies_a_file_create_unchanged_then_a_new_version(
    stack: Stack, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "contrato.yaml"
    path.write_text(DEFINITION)
    argv = ["--engine", target, "workflows", "create", "-f", str(path)]

    created = await call_main(capsys, argv)
    assert created.code == 0, created
    workflow_id = created.out.strip()
    assert "created workflow 'Revisar contrato' (version 1) with 2 steps" in created.err

    again = await call_main(capsys, argv)
    assert again.code == 0, again
    assert again.out.strip() == workflow_id
    assert "unchanged (version 1)" in again.err

    path.write_text(DEFINITION.replace("handler: echo", "handler: sleep"))
    changed = await call_main(capsys, argv)
    assert changed.code == 0, changed
    assert changed.out.strip() == workflow_id
    assert "updated workflow 'Revisar contrato': version 2" in changed.err

    listed: ws.ListWorkflowsResponse = await stack.client.workflows.ListWorkflows(
        ws.ListWorkflowsRequest(), timeout=10
    )
    assert [(w.workflow_id, w.version) for w in listed.workflows] == [(workflow_id, 2)]
    versions = await call_main(capsys, ["--engine", target, "workflows", "versions", workflow_id])
    assert versions.code == 0, versions
    rows = [line.split() for line in versions.out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["2", "1"]
    as_json = await call_main(
        capsys, ["--engine", target, "workflows", "versions", "Revisar contrato", "--json"]
    )
    [listing] = as_json.json_lines()
    assert [v["version"] for v in listing["versions"]] == [2, 1]
    assert [s["handler"] for s in listing["versions"][1]["steps"]] == ["sleep", "echo"]
    first = await call_main(
        capsys, ["--engine", target, "workflows", "show", workflow_id, "--version", "1", "--json"]
    )
    assert [s["handler"] for s in first.json_lines()[0]["steps"]] == ["sleep", "echo"]
