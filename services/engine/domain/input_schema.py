"""A workflow's input schema: the JSON Schema every execution's input must match.

Checked once when the workflow is created (a valid draft 2020-12 schema, bounded in size and
depth, every `$ref` resolvable within the schema itself), and at every start against the
document as the client sent it, before anything is stored. A schema is a user's document:
nothing in it is ever fetched, so its references resolve against a registry that holds the
schema alone and retrieves nothing.

Field names follow the engine's other BadRequest fields for the input (`check_payload`):
`input`, then `.key` per object key and `[i]` per array index, e.g. `input.mime` or
`input.pages[2].title`. A missing required property is named itself (`input.mime`), not
the object that lacks it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import referencing
import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from referencing.jsonschema import DRAFT202012

from services.engine.domain.errors import InputSchemaViolation, InvalidArgument

FIELD = "input_schema"
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
# Violations named in one refusal: enough to fix a document in one go, few enough for the
# status details to stay far below gRPC's 8 KiB trailer budget.
MAX_VIOLATIONS = 10
MAX_DESCRIPTION_CHARS = 160
MAX_FIELD_CHARS = 160
# Keywords whose values are data, not subschemas: a "$ref" key inside them is no reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_REFERENCES = ("$ref", "$dynamicRef")


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs init


@dataclass(frozen=True)
class InputSchema:
    """A checked schema and its compiled validator. Compared and hashed by its JSON text
    (workflows are hashable: the store caches their documents)."""

    text: str
    document: dict[str, Any] = field(repr=False, compare=False)
    _validator: Draft202012Validator = field(repr=False, compare=False)

    @classmethod
    def parse(cls, document: dict[str, Any]) -> InputSchema:
        """Checks a schema as a client sent it. Raises InvalidArgument naming `input_schema`."""
        text = json.dumps(document, separators=(",", ":"), sort_keys=True)
        size = len(text.encode())
        if size > MAX_SCHEMA_BYTES:
            raise InvalidArgument(FIELD, f"{size} bytes, more than the {MAX_SCHEMA_BYTES} allowed")
        _check_depth(document, 0)
        try:
            Draft202012Validator.check_schema(document)
        except SchemaError as exc:
            where = "".join(_step(part) for part in exc.path)
            raise InvalidArgument(
                f"{FIELD}{where}", f"not a valid JSON Schema: {_short(exc.message)}"
            ) from None
        resource = DRAFT202012.create_resource(document)
        # No retrieval: a reference outside the schema is refused here and never fetched.
        registry: referencing.Registry[Any] = referencing.Registry(
            retrieve=_refuse_retrieval  # type: ignore[call-arg]  # attrs field, not in the stub
        ).with_resource(resource.id() or "", resource)
        registry = registry.crawl()
        resolver = registry.resolver(base_uri=resource.id() or "")
        for base, ref in _references(document, resource.id() or ""):
            try:
                resolver.lookup(urljoin(base, ref))
            except referencing.exceptions.Unresolvable:
                raise InvalidArgument(
                    FIELD,
                    f"$ref {_short(ref)!r} does not resolve within the schema; references to"
                    " other documents are not fetched: put what they hold under $defs",
                ) from None
        return cls(text, document, Draft202012Validator(document, registry=registry))

    def check(self, document: dict[str, Any]) -> None:
        """Raises InputSchemaViolation naming every mismatch (up to MAX_VIOLATIONS)."""
        violations: list[tuple[str, str]] = []
        for error in self._validator.iter_errors(document):
            violations.extend(_violations(error))
            if len(violations) >= MAX_VIOLATIONS:
                break
        if violations:
            # By field: the schema's keyword order does not survive a protobuf Struct.
            raise InputSchemaViolation(sorted(violations[:MAX_VIOLATIONS]))


def _check_depth(value: Any, depth: int) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidArgument(FIELD, f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, depth + 1)


def _references(value: Any, base: str) -> list[tuple[str, str]]:
    """Every (base URI, reference) in a schema; `$id` moves the base for what it holds."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        if isinstance(value.get("$id"), str):
            base = urljoin(base, value["$id"])
        for key, item in value.items():
            if key in _REFERENCES and isinstance(item, str):
                found.append((base, item))
            elif key not in _DATA_KEYWORDS:
                found.extend(_references(item, base))
    elif isinstance(value, list):
        for item in value:
            found.extend(_references(item, base))
    return found


def _step(part: str | int) -> str:
    return f"[{part}]" if isinstance(part, int) else f".{part}"


def _short(text: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    kinds: dict[type, str] = {dict: "object", list: "array", str: "string"}
    return kinds.get(type(value), type(value).__name__)


def _violations(error: ValidationError) -> list[tuple[str, str]]:
    where = "input" + "".join(_step(part) for part in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        # One error per missing property; its name is only in the message, so find it.
        missing = [
            name
            for name in error.validator_value
            if name not in error.instance and repr(name) in error.message
        ]
        return [(_short(f"{where}.{name}", MAX_FIELD_CHARS), "required") for name in missing[:1]]
    if error.validator == "type":
        expected = error.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else str(expected)
        description = f"expected {wanted}, got {_type_name(error.instance)}"
    else:
        # The library's message quotes the value, which may be megabytes of base64: cut short.
        description = error.message
    return [(_short(where, MAX_FIELD_CHARS), _short(description))]
