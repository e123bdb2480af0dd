"""The bad-input matrix, shared by the unit tier (fakes) and the end-to-end tier (the demo graph).

Every case is one request to one endpoint and the OpenAI-style error it must get. The table is
built for a :class:`Deployed` graph (its model ids and limits), so both tiers send the same cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
MODERATIONS = "/v1/moderations"
TOKENIZE = "/tokenize"
ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS, MODERATIONS, TOKENIZE)
INVALID = "invalid_request_error"
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@dataclass(frozen=True)
class Deployed:
    """What the matrix needs to know about the graph under test."""

    chat: str  # a local chat model
    embed: str  # a local embedding model
    longest_context: int  # tokens, over every model including cloud ones
    max_body_bytes: int
    max_tokens_cap: int


@dataclass(frozen=True)
class BadInput:
    """One request and the error it must get."""

    id: str
    path: str
    body: bytes
    status: int
    type: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.id


def valid_body(path: str, d: Deployed) -> dict[str, Any]:
    """A small valid request for ``path`` (one token, so a real engine answers at once)."""
    hello = [{"role": "user", "content": "Hi"}]
    return {
        CHAT: {"model": d.chat, "messages": hello, "max_tokens": 1},
        COMPLETIONS: {"model": d.chat, "prompt": "Hi", "max_tokens": 1},
        EMBEDDINGS: {"model": d.embed, "input": "Hi"},
        MODERATIONS: {"input": "Hi"},
        TOKENIZE: {"model": d.chat, "prompt": "Hi"},
    }[path]


def bad_inputs(d: Deployed) -> list[BadInput]:
    """The whole matrix: every endpoint, every kind of bad input."""
    return [*_any_endpoint(d), *_fields(d), *_routing(d)]


def _case(id_: str, path: str, body: Any, status: int = 400, type_: str = INVALID, param: str | None = None,
          headers: dict[str, str] | None = None) -> BadInput:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    name = f"{path.removeprefix('/v1').strip('/').replace('/', '-')}-{id_}"
    return BadInput(name, path, raw, status, type_, param, headers or {})


def _any_endpoint(d: Deployed) -> list[BadInput]:
    """Bodies that are wrong before any field is read; the same answer on every endpoint."""
    cases = []
    for path in ENDPOINTS:
        valid = valid_body(path, d)
        padding = "x" * (d.max_body_bytes + 1)
        depth = min(100_000, (d.max_body_bytes - 64) // 2)  # far past the nesting limit, under the size cap
        cases += [
            _case("malformed-json", path, b'{"model": "auto", "messages": ['),
            _case("empty-body", path, b""),
            _case("json-array", path, b"[1, 2]"),
            _case("json-string", path, b'"hello"'),
            _case("invalid-utf8", path, b'{"model": "\xff\xfe", "input": "\xc3\x28"}'),
            _case("lone-surrogate", path, b'{"model": "\\ud800", "input": "\\udfff", "prompt": "\\ud800"}'),
            _case("nan", path, json.dumps({**valid, "temperature": float("nan")}).encode()),
            _case("deep-nesting", path, b'{"input": ' + b"[" * depth + b"]" * depth + b"}"),
            _case("oversized", path, {**valid, "padding": padding}, 413, "payload_too_large"),
            _case("model-not-a-string", path, {**valid, "model": 7}, param="model"),
        ]
    return cases


def _fields(d: Deployed) -> list[BadInput]:
    """Missing, wrong-typed and out-of-range fields."""
    chat, completions = valid_body(CHAT, d), valid_body(COMPLETIONS, d)
    cases = [  # a field nobody knows is an error, never silently dropped
        _case("unknown-field", path, {**valid_body(path, d), "frobnicate": 1}, param="frobnicate")
        for path in (CHAT, COMPLETIONS, EMBEDDINGS, TOKENIZE)
    ]
    cases += [
        _case("missing-messages", CHAT, {"model": d.chat}, param="messages"),
        _case("messages-not-a-list", CHAT, {**chat, "messages": "hi"}, param="messages"),
        _case("empty-messages", CHAT, {**chat, "messages": []}, param="messages"),
        _case("message-without-role", CHAT, {**chat, "messages": [{"content": "hi"}]}),
        _case("message-not-an-object", CHAT, {**chat, "messages": ["hi"]}),
        _case("temperature-not-a-number", CHAT, {**chat, "temperature": "hot"}, param="temperature"),
        _case("missing-prompt", COMPLETIONS, {"model": d.chat}, param="prompt"),
        _case("prompt-wrong-type", COMPLETIONS, {**completions, "prompt": {"text": 1}}),
        _case("missing-input", EMBEDDINGS, {"model": d.embed}, param="input"),
        _case("input-wrong-type", EMBEDDINGS, {"model": d.embed, "input": {"text": 1}}),
        *(  # raw binary embeddings are vLLM's own formats, not OpenAI's: named, not a 5xx
            _case(f"encoding-{kind}", EMBEDDINGS, {**valid_body(EMBEDDINGS, d), "encoding_format": kind},
                  param="encoding_format")
            for kind in ("bytes", "bytes_only")
        ),
        _case("missing-input", MODERATIONS, {}, param="input"),
        _case("input-wrong-type", MODERATIONS, {"input": 42}, param="input"),
        _case("missing-prompt", TOKENIZE, {"model": d.chat}),
        _case("auto-model", TOKENIZE, {"prompt": "hi"}, param="model"),
    ]
    for path, valid in ((CHAT, chat), (COMPLETIONS, completions)):
        for key, value in (
            ("max_tokens", "many"), ("max_tokens", -1), ("max_tokens", 0), ("max_tokens", d.max_tokens_cap + 1),
            ("max_tokens", 10**30), ("n", 0), ("n", -1), ("n", 10**6), ("temperature", -0.5),
            ("temperature", 3), ("top_p", 1.5),
        ):
            cases.append(_case(f"{key}={value}", path, {**valid, key: value}, param=key))
    cases.append(_case("max_completion_tokens-over-cap", CHAT,
                       {**chat, "max_completion_tokens": d.max_tokens_cap + 1}, param="max_completion_tokens"))
    return cases


def _routing(d: Deployed) -> list[BadInput]:
    """Valid requests nothing can serve: unknown models, capabilities, schemas, context."""
    chat = valid_body(CHAT, d)
    nope = "local/llama/nope"
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"a": deep}}
    long_text = "word " * (d.longest_context * 5 // 4)  # about 4 characters a token
    cases = [
        _case("unknown-model", path, {**valid_body(path, d), "model": nope}, 404, "model_not_found", "model")
        for path in (CHAT, COMPLETIONS, EMBEDDINGS, TOKENIZE)
    ]
    return cases + [
        _case("unknown-model", MODERATIONS, {"input": "hi", "model": nope}, 404, "model_not_found", "model"),
        _case("unknown-size", CHAT, {**chat, "model": "auto:huge"}, 404, "model_not_found", "model"),
        _case("tools", CHAT, {**chat, "model": "auto", "tools": TOOLS}, 400, "capability_unavailable", "tools"),
        _case("chat-model-embeds", EMBEDDINGS, {"model": d.chat, "input": "hi"}, 400, "capability_unavailable"),
        _case("embedder-chats", CHAT, {**chat, "model": d.embed}, 400, "capability_unavailable"),
        _case("invalid-schema", CHAT, {**chat, "response_format": schema}, param="response_format"),
        _case("schema-not-an-object", CHAT,
              {**chat, "response_format": {"type": "json_schema", "json_schema": "x"}}, param="response_format"),
        _case("deep-schema", CHAT, {**chat, "response_format": {
            "type": "json_schema", "json_schema": {"name": "deep", "schema": deep}}}),
        _case("prompt-too-long", CHAT, {"model": "auto", "messages": [{"role": "user", "content": long_text}]},
              400, "context_length_exceeded"),
        _case("prompt-too-long", COMPLETIONS, {"model": "auto", "prompt": long_text}, 400, "context_length_exceeded"),
        _case("size-header", CHAT, chat, param="size", headers={"X-Turnout-Size": "huge"}),
    ]
