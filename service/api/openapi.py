"""Request-body schemas for the OpenAPI document of the POST routes (``/openapi.json``).

The routes read the raw body themselves (to cap its size before parsing, and to answer
OpenAI-style 400s where FastAPI would answer 422), so FastAPI cannot derive these schemas. They
are a compact hand-written subset of OpenAI's API, not the JSON schema of vLLM's pydantic models:
that one is about 40 kB for chat alone, with dozens of engine-only fields and deep unions of
message types, so a schema-driven fuzzer spends its examples on fields no client sends and its
time on resolving references. The subset names the fields clients send, with the bounds the
server enforces (:mod:`service.api.parsing`); other fields are allowed and are still validated
by the server against vLLM's models.
"""

from __future__ import annotations

from typing import Any

from router.protocol import SizeClass

Json = dict[str, Any]

MAX_N = 128  # OpenAI's own bound on choices per request

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
_RESPONSE_FORMAT = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
        "json_schema": {
            "type": "object",
            "required": ["name", "schema"],
            "properties": {"name": _TEXT, "schema": {"type": "object"}, "strict": {"type": "boolean"}},
        },
    },
}


def _object(required: list[str], properties: Json) -> Json:
    return {"type": "object", "required": required, "properties": properties}


CHAT = _object(
    ["messages"],
    {
        "model": _MODEL, "messages": _MESSAGES, **_SAMPLING,
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "response_format": _RESPONSE_FORMAT,
    },
)
COMPLETIONS = _object(
    ["prompt"], {"model": _MODEL, "prompt": {"oneOf": [_TEXT, _TEXTS, _TOKENS]}, **_SAMPLING}
)
EMBEDDINGS = _object(["input"], {"model": _MODEL, "input": {"oneOf": [_TEXT, _TEXTS, _TOKENS]}})
MODERATIONS = _object(["input"], {"model": _MODEL, "input": {"oneOf": [_TEXT, _TEXTS]}})
TOKENIZE = _object(
    ["model"],
    {"model": {"type": "string", "description": "An explicit local model id."}, "prompt": _TEXT,
     "messages": _MESSAGES},
)


def request_body(schema: Json) -> Json:
    """``openapi_extra`` for a route whose JSON body follows ``schema``, and its error answers."""
    error = {"description": "An OpenAI-style error body: {error: {message, type, param, code}}."}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {str(status): error for status in (400, 401, 404, 413, 503)},
    }
