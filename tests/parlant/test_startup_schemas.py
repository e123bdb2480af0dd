"""Every schema Parlant's engine binds a generator for at start-up, served and parsed.

The list is read from Parlant's own start-up code, so a Parlant release that adds a schema is
covered without editing this test.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import time
from typing import Any

import parlant.bin.server as parlant_server
import pytest
from turnout_parlant import TurnoutNLPService

pytestmark = pytest.mark.e2e


def startup_schemas() -> list[type]:
    """The classes in the ``for schema in (...)`` loop that calls ``get_schematic_generator``."""
    tree = ast.parse(inspect.getsource(parlant_server))
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.AsyncFor) and isinstance(node.target, ast.Name) \
                and node.target.id == "schema" and "get_schematic_generator" in ast.unparse(node):
            return [getattr(parlant_server, element.id) for element in node.iter.elts]  # type: ignore[attr-defined]
    raise LookupError("Parlant's start-up no longer binds schematic generators in a loop")


def test_the_startup_schema_list_is_found() -> None:
    names = {schema.__name__ for schema in startup_schemas()}
    assert len(names) >= 20 and {"MessageSchema", "GenericActionableGuidelineMatchesSchema"} <= names


async def test_every_startup_schema_is_served_and_parsed(service: TurnoutNLPService) -> None:
    schemas = startup_schemas()
    started = time.monotonic()
    results = await asyncio.gather(*(_generate(service, schema) for schema in schemas), return_exceptions=True)
    failures = {s.__name__: r for s, r in zip(schemas, results) if isinstance(r, BaseException)}
    print(f"{len(schemas)} start-up schemas in {time.monotonic() - started:.1f}s")
    assert not failures, failures
    for schema, result in zip(schemas, results):
        assert isinstance(result.content, schema)  # type: ignore[union-attr]


async def _generate(service: TurnoutNLPService, schema: type):  # type: ignore[no-untyped-def]
    # A 135M model given no real task loops inside long strings and lists until max_tokens, so
    # the prompt hands it a minimal instance to repeat: what is under test is that the schema goes
    # out, is enforced by the backend, and comes back parsed into Parlant's class.
    generator = await service.get_schematic_generator(schema)
    example = json.dumps(minimal_instance(schema.model_json_schema()))
    prompt = f"Repeat exactly this JSON object and nothing else:\n{example}"
    return await generator.generate(prompt, {"temperature": 0.0})


def minimal_instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """The smallest value a JSON schema accepts (empty lists, first enum member, "x", 0, false)."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        return minimal_instance(defs[schema["$ref"].split("/")[-1]], defs)
    if "enum" in schema or "const" in schema:
        return schema["enum"][0] if "enum" in schema else schema["const"]
    if options := schema.get("anyOf") or schema.get("oneOf"):
        return minimal_instance(options[0], defs)
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal_instance(props[name], defs) for name in schema.get("required", props)}
    if kind == "array":
        return [minimal_instance(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
    return {"string": "x", "integer": 0, "number": 0, "boolean": False, "null": None}[kind]
