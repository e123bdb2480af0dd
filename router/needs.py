"""Deriving what a request needs (capabilities, context, model choice) from its OpenAI body.

Model strings: an explicit target id, ``auto``, or ``auto:<part>[:<part>]`` where each part is
``reasoning`` or a size class (``nano``, ``mini``, ``large``). A size hint may also come from the
``X-Turnout-Size`` header or the ``size`` body field; precedence is alias > body field > header.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.errors import ClientError, ModelNotFoundError
from engine.protocol import Capability
from router.protocol import Endpoint, RequestNeeds, SizeClass

AUTO = "auto"
REASONING_ALIAS = "reasoning"
SIZE_HEADER = "X-Turnout-Size"
SIZE_FIELD = "size"
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4

_BASE_CAPABILITY = {
    Endpoint.CHAT: Capability.CHAT,
    Endpoint.COMPLETIONS: Capability.COMPLETION,
    Endpoint.EMBEDDINGS: Capability.EMBEDDINGS,
    Endpoint.MODERATIONS: Capability.MODERATION,
}
_GENERATIVE = (Endpoint.CHAT, Endpoint.COMPLETIONS)
_JSON_FORMATS = ("json_schema", "json_object")
_SIZES = frozenset(s.value for s in SizeClass)


class ModelSelection(BaseModel):
    """The parsed ``model`` string: an explicit target, or auto routing with its modifiers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_id: str | None = None
    size: SizeClass | None = None
    reasoning: bool = False

    @property
    def is_auto(self) -> bool:
        return self.target_id is None


def parse_size(value: str | None, *, param: str = SIZE_FIELD) -> SizeClass | None:
    """A size hint (``nano``/``mini``/``large``, any case); None or blank means no hint."""
    if value is None or not value.strip():
        return None
    try:
        return SizeClass(value.strip().lower())
    except ValueError:
        sizes = ", ".join(s.value for s in SizeClass)
        raise ClientError(f"invalid size hint {value!r} (one of {sizes})", param=param) from None


def parse_model(model: str | None, size_hint: str | None = None) -> ModelSelection:
    """Parse a ``model`` string; ``size_hint`` applies to auto routing only.

    None means ``auto``. An invalid hint is an error even for an explicit model.
    """
    hinted = parse_size(size_hint)
    if model is None or model == AUTO:
        return ModelSelection(size=hinted)
    if not model.startswith(AUTO + ":"):
        return ModelSelection(target_id=model)
    reasoning, size = False, None
    for part in model.split(":")[1:]:
        if part == REASONING_ALIAS and not reasoning:
            reasoning = True
        elif part in _SIZES and size is None:
            size = SizeClass(part)
        else:
            raise ModelNotFoundError(_bad_alias(model), param="model")
    return ModelSelection(size=size or hinted, reasoning=reasoning)


def _bad_alias(model: str) -> str:
    parts = ", ".join([REASONING_ALIAS, *(s.value for s in SizeClass)])
    return f"unknown model alias {model!r}: use 'auto' or 'auto:<part>' with parts from {parts}"


def derive_needs(
    endpoint: Endpoint,
    body: Mapping[str, Any],
    *,
    prompt_tokens: int | None = None,
    size_hint: str | None = None,
) -> RequestNeeds:
    """What ``body`` (an OpenAI request for ``endpoint``) requires of a target.

    ``prompt_tokens`` is the count the service measured (for a batch, its longest input); without
    it a cheap estimate is used. ``size_hint`` is the ``X-Turnout-Size`` header value.
    """
    selection = parse_model(_model(body), _size_value(body, size_hint))
    generative = endpoint in _GENERATIVE
    return RequestNeeds(
        capabilities=_capabilities(endpoint, body, selection),
        prompt_tokens=_prompt_tokens(endpoint, body, prompt_tokens),
        max_tokens=_max_tokens(body) if generative else None,
        target_id=selection.target_id,
        size=selection.size,
    )


def _model(body: Mapping[str, Any]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ClientError("'model' must be a string", param="model")
    return model


def _size_value(body: Mapping[str, Any], header: str | None) -> str | None:
    field = body.get(SIZE_FIELD)
    if field is not None and not isinstance(field, str):
        raise ClientError(f"'{SIZE_FIELD}' must be a string", param=SIZE_FIELD)
    return field if field is not None else header


def _capabilities(
    endpoint: Endpoint, body: Mapping[str, Any], selection: ModelSelection
) -> frozenset[Capability]:
    needed = {_BASE_CAPABILITY[endpoint]}
    generative = endpoint in _GENERATIVE
    if selection.reasoning or (generative and body.get("reasoning_effort") is not None):
        needed.add(Capability.REASONING)
    if generative and _wants_json(body.get("response_format")):
        needed.add(Capability.JSON_SCHEMA)
    if generative and (body.get("tools") or body.get("functions")):
        needed.add(Capability.TOOLS)
    return frozenset(needed)


def _wants_json(response_format: Any) -> bool:
    return isinstance(response_format, Mapping) and response_format.get("type") in _JSON_FORMATS


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 16.0 is 16, as the request model reads it
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ClientError(f"'{key}' must be a non-negative integer", param=key)
        return value
    return None


def _prompt_tokens(endpoint: Endpoint, body: Mapping[str, Any], measured: int | None) -> int:
    if measured is None:
        return estimate_prompt_tokens(endpoint, body)
    if measured < 0:
        raise ValueError(f"prompt_tokens must be >= 0, got {measured}")
    return measured


def estimate_prompt_tokens(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    """A cheap upper-leaning token estimate (about 4 characters a token), without a tokenizer.

    For batched inputs (completions prompts, embeddings and moderation inputs) it is the longest
    one, since each is its own sequence.
    """
    if endpoint is Endpoint.CHAT:
        return _chat_tokens(body.get("messages"), body.get("tools"))
    key = "prompt" if endpoint is Endpoint.COMPLETIONS else "input"
    return _longest_input(body.get(key))


def _chat_tokens(messages: Any, tools: Any) -> int:
    if not isinstance(messages, list):
        return 0
    chars = sum(_message_chars(m) for m in messages if isinstance(m, Mapping))
    if tools:
        chars += len(json.dumps(tools, ensure_ascii=False, default=str))
    return _tokens(chars) + MESSAGE_OVERHEAD_TOKENS * (len(messages) + 1)


def _message_chars(message: Mapping[str, Any]) -> int:
    chars = _text_chars(message.get("content"))
    if message.get("tool_calls"):
        chars += len(json.dumps(message["tool_calls"], ensure_ascii=False, default=str))
    return chars


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(_text_chars(part.get("text")) for part in content if isinstance(part, Mapping))
    return 0


def _longest_input(value: Any) -> int:
    if isinstance(value, str):
        return _tokens(len(value))
    if not isinstance(value, list) or not value:
        return 0
    if all(isinstance(v, int) for v in value):
        return len(value)  # already token ids
    return max(_single_input(v) for v in value)


def _single_input(value: Any) -> int:
    if isinstance(value, list):
        return len(value)  # one tokenised input
    if isinstance(value, Mapping):
        return _tokens(_text_chars(value.get("text")))
    return _tokens(len(value)) if isinstance(value, str) else 0


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)
