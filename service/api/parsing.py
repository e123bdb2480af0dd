"""Validate a request once, into vLLM's OpenAI protocol objects and the router's needs
(:class:`service.requests.ClientRequest`), with one message per rule."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from vllm.exceptions import VLLMClientError

from engine.errors import ClientError
from router.needs import derive_needs
from router.protocol import Endpoint
from service.api.errors import PayloadTooLargeError
from service.config import LimitsSettings
from service.requests import ClientRequest

Json = dict[str, Any]
MAX_DEPTH = 100  # JSON nesting levels of a request body; JSON schemas rarely pass 30
# OpenAI's bounds, which vLLM's request models do not check (max_tokens has its cap below too).
MAX_N = 128  # OpenAI's own bound on choices per request
# embeddings come back as JSON (OpenAI's two formats); vLLM's raw "bytes" answers are not relayed
EMBEDDING_FORMATS = ("float", "base64")
_RANGES = {
    "max_tokens": (1, math.inf), "max_completion_tokens": (1, math.inf), "n": (1, MAX_N),
    "temperature": (0, 2), "top_p": (0, 1),
}


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
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, NaN, absurd nesting
        raise ClientError(f"the request body is not valid JSON: {_describe(e)}") from None
    if _has_lone_surrogate(raw, body):
        raise ClientError("the request body holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)")
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object")
    if _depth(body) > MAX_DEPTH:  # deeper bodies would exhaust the stack of later steps
        raise ClientError(f"the request body is nested more than {MAX_DEPTH} levels deep")
    body.setdefault("model", "auto")
    return body


def client_request(
    endpoint: Endpoint, body: Json, limits: LimitsSettings, model: type[BaseModel] | None = None,
    size_hint: str | None = None,
) -> ClientRequest:
    """``body`` for ``endpoint`` as the one object every later layer reads: validated as
    ``model`` (:func:`validated`; None: no vLLM request model, as for moderations), and its needs
    derived (``size_hint``: the ``X-Turnout-Size`` header)."""
    engine = validated(model, body, limits) if model is not None else None
    return ClientRequest(endpoint, body, engine, derive_needs(endpoint, body, size_hint=size_hint))


def validated(model: type[BaseModel], body: Json, limits: LimitsSettings) -> Any:
    """``body`` as ``model``; 400 naming each invalid field, the max_tokens cap and a bad schema.

    A field that neither the request model nor Turnout knows is rejected as OpenAI does
    ("Unrecognized request argument"), not dropped: nothing a client sends is silently ignored.
    """
    unknown = sorted(set(body) - known_fields(model))
    if unknown:
        raise ClientError(f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0])
    _check_generation_fields(body, limits)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        fields = "; ".join(f"{_loc(err)}: {err['msg']}" for err in e.errors()[:5])
        raise ClientError(f"invalid request: {fields}", param=_loc(first)) from None
    except VLLMClientError as e:  # raised by vLLM's model validators, past pydantic
        raise ClientError(f"invalid request: {e}", param=getattr(e, "parameter", None)) from None
    except (AttributeError, TypeError, KeyError, IndexError) as e:
        # vLLM's model validators read some fields before checking their type (a list where an
        # object belongs): the body is at fault, not the server
        raise ClientError(f"invalid request: {e.__class__.__name__}: {e}") from None


@functools.cache
def known_fields(model: type[BaseModel]) -> frozenset[str]:
    """The body keys ``model`` accepts (names and aliases), plus Turnout's own ``size`` hint."""
    names = {"size"}
    for name, field in model.model_fields.items():
        names.add(name)
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                names.add(alias)
    return frozenset(names)


def _check_generation_fields(body: Json, limits: LimitsSettings) -> None:
    if "messages" in body and (not isinstance(body["messages"], list) or not body["messages"]):
        raise ClientError("messages must be a non-empty list", param="messages")
    for key, (lowest, highest) in _RANGES.items():
        _check_range(key, body.get(key), lowest, highest)
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > limits.max_tokens_cap:
            raise ClientError(f"{key} is {value}; this server allows at most {limits.max_tokens_cap}", param=key)
    _check_schema(body.get("response_format"))
    encoding = body.get("encoding_format")
    if isinstance(encoding, str) and encoding not in EMBEDDING_FORMATS:
        raise ClientError(
            f"encoding_format {encoding!r} is not served; use {' or '.join(EMBEDDING_FORMATS)}", param="encoding_format"
        )


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


def _check_range(key: str, value: Any, lowest: float, highest: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or lowest <= value <= highest:
        return  # absent, or of a wrong type that the request model names
    bound = f"at least {lowest}" if highest == math.inf else f"between {lowest} and {highest}"
    raise ClientError(f"{key} is {value}; it must be {bound}", param=key)


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _describe(error: Exception) -> str:
    return "nested too deeply" if isinstance(error, RecursionError) else str(error)


def _has_lone_surrogate(raw: bytes, body: Any) -> bool:
    """Whether ``body`` holds a surrogate escape that is not half of a pair (not encodable)."""
    if b"\\ud" not in raw.lower():  # the escapes themselves are rare; skip the full check
        return False
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def _loc(error: dict) -> str:
    return ".".join(str(p) for p in error.get("loc", ())) or "body"


def _too_large(limits: LimitsSettings) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the request body exceeds {limits.max_body_bytes} bytes")
