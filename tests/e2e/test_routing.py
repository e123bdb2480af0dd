"""Routing by capability, explicit ids, size hints, and fallback on context length."""

from __future__ import annotations

import httpx
import pytest

from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from tests.graph import CLOUD_ID, DEEPSEEK_CONTEXT

pytestmark = pytest.mark.e2e
HELLO = [{"role": "user", "content": "Hello"}]


def _chat(http: httpx.Client, headers: dict | None = None, **body) -> httpx.Response:
    reply = http.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4, **body}, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply


def test_embeddings_and_chat_go_to_capable_models(http: httpx.Client) -> None:
    embedded = http.post("/v1/embeddings", json={"model": "auto", "input": "hello"})
    assert embedded.json()["model"] == MINILM_ID
    chat = _chat(http, model="auto")
    assert chat.json()["model"] in {SMOLLM2_ID, DEEPSEEK_ID}
    assert chat.headers["x-turnout-route"].endswith("=served")


def test_explicit_model_is_honoured(http: httpx.Client) -> None:
    for model in (SMOLLM2_ID, DEEPSEEK_ID, CLOUD_ID):
        reply = _chat(http, model=model)
        assert reply.json()["model"] == model
        assert reply.headers["x-turnout-route"] == f"{model}=served"


def test_size_hints_pick_the_size(http: httpx.Client) -> None:
    assert _chat(http, model="auto:large").json()["model"] == CLOUD_ID
    assert _chat(http, model="auto", headers={"X-Turnout-Size": "large"}).json()["model"] == CLOUD_ID
    assert _chat(http, model="auto:nano").json()["model"] in {SMOLLM2_ID, DEEPSEEK_ID}


def test_context_too_long_for_local_falls_back_to_cloud(http: httpx.Client) -> None:
    prompt = [{"role": "user", "content": "hello " * (DEEPSEEK_CONTEXT + 400)}]  # longer than its context
    reply = _chat(http, model=DEEPSEEK_ID, messages=prompt)
    assert reply.json()["model"] in {SMOLLM2_ID, CLOUD_ID}
    assert f"{DEEPSEEK_ID}=context_length" in reply.headers["x-turnout-route"]
