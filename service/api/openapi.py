"""Request-body schemas for the OpenAPI document of the POST routes (``/openapi.json``).

The routes read the raw body themselves (to cap its size before parsing, and to answer
OpenAI-style 400s where FastAPI would answer 422), so FastAPI cannot derive these schemas. They
are a compact hand-written subset of OpenAI's API, not the JSON schema of vLLM's pydantic models:
that one is about 40 kB for chat alone, with dozens of engine-only fields and deep unions of
message types, so a schema-driven fuzzer spends its examples on fields no client sends and its
time on resolving references. The subset types the fields clients send, with the bounds the
server enforces (:mod:`service.api.parsing`). Which field names a body may hold comes from the same
rule the server applies (:func:`service.api.parsing.known_fields` of the vLLM request model the
route validates against: ``propertyNames``); a name outside it is answered 400 "Unrecognized
request argument", as OpenAI does. Fields of vLLM's models that the subset does not type are
accepted and validated by the server against those models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from router.protocol import SizeClass
from service.api.parsing import EMBEDDING_FORMATS, MAX_N, known_fields
from service.serve_overrides.openai_types import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingCompletionRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)

Json = dict[str, Any]


_TEXT = {"type": "string"}
_TEXTS = {"type": "array", "items": _TEXT, "minItems": 1}
_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_MODEL = {"type": "string", "description": "A model id, or auto, auto:<size> (router's choice)."}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": _TEXT,
        "name": _TEXT,
    },
}
_MESSAGES = {"type": "array", "items": _MESSAGE, "minItems": 1}
_SAMPLING = {
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "n": {"type": "integer", "minimum": 1, "maximum": MAX_N},
    "stream": {"type": "boolean"},
    "seed": {"type": "integer", "minimum": 0},
    "stop": {"oneOf": [_TEXT, {"type": "array", "items": _TEXT, "maxItems": 4}]},
    "size": {"type": "string", "enum": [s.value for s in SizeClass]},
}
_JSON_SCHEMA = {
    "type": "object",
    "required": ["name", "schema"],
    "properties": {"name": _TEXT, "schema": {"type": "object"}, "strict": {"type": "boolean"}},
}
_RESPONSE_FORMAT = {
    "oneOf": [
        {"type": "object", "required": ["type"],
         "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}}},
        {"type": "object", "required": ["type", "json_schema"],
         "properties": {"type": {"const": "json_schema"}, "json_schema": _JSON_SCHEMA}},
    ],
}


def _object(required: list[str], properties: Json, *accepts: type[BaseModel]) -> Json:
    """A body with ``properties`` typed and, given ``accepts``, only the names one of them knows;
    their other scalar fields are typed as the models type them (:func:`_scalar_fields`)."""
    body: Json = {"type": "object", "required": required, "properties": properties}
    if accepts:
        body["propertyNames"] = {"enum": sorted(set().union(*(known_fields(model) for model in accepts)))}
        scalars = {}
        for model in accepts:
            scalars.update(_scalar_fields(model))
        body["properties"] = {**scalars, **properties}
    return body


_SCALARS = ("boolean", "integer", "number", "string")


def _scalar_fields(model: type[BaseModel]) -> Json:
    """``model``'s fields typed from its own JSON schema: scalars and enums with their bounds,
    arrays (of scalars: with their items' type) and objects by their JSON type, each with null where
    the model allows it. Rules across fields (``top_logprobs`` needs ``logprobs``) and inside
    objects are the server's to check."""
    document = model.model_json_schema()
    fields: Json = {}
    for name, schema in document.get("properties", {}).items():
        options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
        nullable = len(options) < len(schema.get("anyOf", [schema]))
        if len(options) != 1:
            continue
        option = options[0]
        if "$ref" in option:
            option = document.get("$defs", {}).get(option["$ref"].rpartition("/")[2], {})
        if option.get("type") in _SCALARS:
            typed = {k: v for k, v in option.items() if k in _BOUNDS}
        elif option.get("type") in ("array", "object"):
            typed = {"type": option["type"]}
            items = option.get("items", {})
            if option["type"] == "array" and items.get("type") in _SCALARS:
                typed["items"] = {"type": items["type"]}
        else:
            continue
        fields[name] = {"anyOf": [typed, {"type": "null"}]} if nullable else typed
    return fields


_BOUNDS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength")


CHAT = _object(
    ["messages"],
    {
        "model": _MODEL, "messages": _MESSAGES, **_SAMPLING,
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "response_format": _RESPONSE_FORMAT,
    },
    ChatCompletionRequest,
)
COMPLETIONS = _object(
    ["prompt"], {"model": _MODEL, "prompt": {"oneOf": [_TEXT, _TEXTS, _TOKENS]}, **_SAMPLING}, CompletionRequest,
)
EMBEDDINGS = _object(
    ["input"],
    {
        "model": _MODEL, "input": {"oneOf": [_TEXT, _TEXTS, _TOKENS]}, "size": _SAMPLING["size"],
        "encoding_format": {"type": "string", "enum": list(EMBEDDING_FORMATS)},
    },
    EmbeddingCompletionRequest,
)
MODERATIONS = _object(["input"], {"model": _MODEL, "input": {"oneOf": [_TEXT, _TEXTS]}})
_TOKENIZE_MODEL = {"type": "string", "description": "An explicit local model id."}
# a completion-style body (prompt) or a chat-style one (messages)
TOKENIZE = {
    "oneOf": [
        _object(["model", "prompt"], {"model": _TOKENIZE_MODEL, "prompt": _TEXT}, TokenizeCompletionRequest),
        _object(["model", "messages"], {"model": _TOKENIZE_MODEL, "messages": _MESSAGES}, TokenizeChatRequest),
    ],
}


def request_body(schema: Json) -> Json:
    """``openapi_extra`` for a route whose JSON body follows ``schema``, and its error answers."""
    error = {"description": "An OpenAI-style error body: {error: {message, type, param, code}}."}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {str(status): error for status in (400, 401, 404, 413, 503)},
    }
