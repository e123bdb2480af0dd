"""Validate a request once, into vLLM's OpenAI protocol objects, with one message per rule."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from engine.errors import ClientError
from service.api.errors import PayloadTooLargeError
from service.config import LimitsSettings

Json = dict[str, Any]


async def read_json(request: Request, limits: LimitsSettings) -> Json:
    """The request's JSON object; 413 when too large, 400 when not a JSON object."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits)
    raw = b""
    async for part in request.stream():
        raw += part
        if len(raw) > limits.max_body_bytes:
            raise _too_large(limits)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ClientError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object")
    body.setdefault("model", "auto")
    return body


def validated(model: type[BaseModel], body: Json, limits: LimitsSettings) -> Any:
    """``body`` as ``model``; 400 naming each invalid field, the max_tokens cap and a bad schema."""
    _check_generation_fields(body, limits)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        fields = "; ".join(f"{_loc(err)}: {err['msg']}" for err in e.errors()[:5])
        raise ClientError(f"invalid request: {fields}", param=_loc(first)) from None


def _check_generation_fields(body: Json, limits: LimitsSettings) -> None:
    if "messages" in body and (not isinstance(body["messages"], list) or not body["messages"]):
        raise ClientError("messages must be a non-empty list", param="messages")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > limits.max_tokens_cap:
            raise ClientError(f"{key} is {value}; this server allows at most {limits.max_tokens_cap}", param=key)
    _check_schema(body.get("response_format"))


def _check_schema(response_format: Any) -> None:
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise ClientError("response_format.json_schema.schema must be a JSON object", param="response_format")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        raise ClientError(f"response_format holds an invalid JSON schema: {e.message}", param="response_format") from None


def _loc(error: dict) -> str:
    return ".".join(str(p) for p in error.get("loc", ())) or "body"


def _too_large(limits: LimitsSettings) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the request body exceeds {limits.max_body_bytes} bytes")
