"""What users hand to the CLI, read and checked before anything is sent: workflow
definitions (YAML or JSON files), `--input` / `--data` JSON, and `--file` documents."""

from __future__ import annotations

import base64
import json
import mimetypes
import re
import uuid
from pathlib import Path
from typing import Any

import yaml
from discovery.engine.v1 import workflow_pb2 as wf_pb
from google.protobuf import json_format

from services.cli.errors import UsageError

# uuid_proceso is derived from --request-id when one is given, so that running the same
# command again is recognised by the engine as the same request rather than a conflict.
_PROCESS_NAMESPACE = uuid.UUID("1f0c6f1e-5d4c-4c39-9a0e-6b8f0d0c7d21")


def read_definition(path: Path) -> wf_pb.Workflow:
    """A workflow definition `{"name", "description", "steps": [...]}` from YAML or JSON
    (JSON is YAML), checked against the Workflow message so a misspelt field is named."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML or JSON: {_one_line(str(exc))}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping with name, description and steps")
    workflow = wf_pb.Workflow()
    try:
        json_format.ParseDict(raw, workflow)
    except json_format.ParseError as exc:
        raise UsageError(f"{path}: {_parse_problem(str(exc))}") from None
    return workflow


_LOCATION = re.compile(r" at Workflow\.?(\S*)$")
_NESTING = re.compile(r"Failed to parse \w+ field: ")
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "([^"]*)" at "([^"]*)"')


def _parse_problem(message: str) -> str:
    """protobuf's ParseError, said the way the definition is written: the misspelt field
    named by its path, with the fields that would fit."""
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown is None:
        text = _one_line(_NESTING.sub("", message)).rstrip(".")
        located = _LOCATION.search(text)
        if located is None:
            return f"a value has the wrong type: {text}"
        where = located.group(1) or "top level"
        return f"{where}: {text[: located.start()]}"
    type_name, name, where = unknown.groups()
    where = where.removeprefix("Workflow").lstrip(".")
    descriptor = wf_pb.DESCRIPTOR.pool.FindMessageTypeByName(type_name)
    fields = ", ".join(f.name for f in descriptor.fields if f.name not in _ASSIGNED)
    at = f"{where}." if where else ""
    return f"{at}{name}: unknown field (expected one of: {fields})"


# Given by the engine; never written in a definition.
_ASSIGNED = frozenset({"workflow_id", "step_id", "create_time"})


def json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object from the command line; `@path` reads it from a file."""
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{option}: {text[1:]}: {exc.strerror or exc}") from None
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option}: expected a JSON object, got {type(value).__name__}")
    return value


def file_document(path: Path, request_id: str | None) -> dict[str, Any]:
    """The legacy input document for one file:
    {"base64", "mime", "nombre_documento", "uuid_proceso"}."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--file: {path}: {exc.strerror or exc}") from None
    mime = "application/pdf" if path.suffix.lower() == ".pdf" else mimetypes.guess_type(path)[0]
    process = uuid.uuid5(_PROCESS_NAMESPACE, request_id) if request_id else uuid.uuid4()
    return {
        "base64": base64.b64encode(data).decode("ascii"),
        "mime": mime or "application/octet-stream",
        "nombre_documento": path.name,
        "uuid_proceso": str(process),
    }


def _one_line(text: str) -> str:
    return " ".join(text.split())
