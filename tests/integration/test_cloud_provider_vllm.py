"""The OpenAI-compatible provider against a real OpenAI-compatible server: vLLM's own.

vLLM's API server stands in for a cloud provider: the session's stand-in (``cloud_standin`` in
tests/graph.py), on loopback with the demo SmolLM2 checkpoint, eager mode, an explicit KV cache
size and an API key. The demo graph uses the same server as its cloud target.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from router.errors import (
    ContextLengthExceededError,
    TargetTimeoutError,
    TargetUnavailableError,
)
from router.fallback import classify_failure
from router.protocol import FallbackReason
from router.providers import (
    CloudProviderSettings,
    OpenAICompatibleProvider,
    UpstreamAuthError,
)
from testkit.servers import free_port
from tests.graph import CLOUD_NAME, Standin

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SERVED_NAME = CLOUD_NAME
KEY_ENV = "TURNOUT_TEST_UPSTREAM_KEY"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


class Attempts:
    """Counts the requests a client sends (each retry is one)."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, request: httpx.Request) -> None:
        self.count += 1


def settings(base_url: str, **overrides: Any) -> CloudProviderSettings:
    values: dict[str, Any] = {
        "name": "vllm-upstream",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "model_map": {"smollm2": SERVED_NAME},
        "max_retries": 2,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "timeout_s": 120.0,
        "first_token_timeout_s": 120.0,
    }
    return CloudProviderSettings(**(values | overrides))


@pytest.fixture
def counted() -> Iterator[tuple[httpx.AsyncClient, Attempts]]:
    attempts = Attempts()
    yield httpx.AsyncClient(event_hooks={"request": [attempts]}), attempts


@pytest_asyncio.fixture(loop_scope="session")
async def provider(
    cloud_standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OpenAICompatibleProvider]:
    monkeypatch.setenv(KEY_ENV, cloud_standin.api_key)
    async with OpenAICompatibleProvider(settings(cloud_standin.base_url)) as upstream:
        yield upstream


async def test_chat_answers_the_capital_of_france(
    provider: OpenAICompatibleProvider, cloud_standin: Standin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await provider.chat(
        {"model": "smollm2", "messages": FRANCE, "max_tokens": 32, "temperature": 0.0}
    )
    assert answer["model"] == SERVED_NAME
    assert "Paris" in answer["choices"][0]["message"]["content"]
    assert all(cloud_standin.api_key not in record.getMessage() for record in caplog.records)


async def test_streaming_chat_yields_chunks_of_an_answer(
    provider: OpenAICompatibleProvider,
) -> None:
    body = {"model": "smollm2", "messages": FRANCE, "max_tokens": 32, "temperature": 0.0}
    chunks = [chunk async for chunk in provider.stream_chat(body)]
    assert len(chunks) > 2
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip() and "Paris" in text


async def test_completions(provider: OpenAICompatibleProvider) -> None:
    body = {
        "model": "smollm2", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0.0
    }
    answer = await provider.completions(body)
    assert answer["choices"][0]["text"].strip()
    assert 0 < answer["usage"]["completion_tokens"] <= 8


async def test_a_prompt_beyond_the_context_falls_back_for_context_length(
    provider: OpenAICompatibleProvider,
) -> None:
    body = {"model": "smollm2", "prompt": "hello " * 20_000, "max_tokens": 8}
    with pytest.raises(ContextLengthExceededError) as caught:
        await provider.completions(body)
    assert classify_failure(caught.value) is FallbackReason.CONTEXT_LENGTH


async def test_health_check(provider: OpenAICompatibleProvider) -> None:
    assert await provider.health_check()


async def test_a_wrong_key_is_an_auth_error_without_retries(
    cloud_standin: Standin,
    counted: tuple[httpx.AsyncClient, Attempts],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, attempts = counted
    monkeypatch.setenv(KEY_ENV, "sk-not-the-right-key")
    async with client, OpenAICompatibleProvider(settings(cloud_standin.base_url), client) as wrong:
        with pytest.raises(UpstreamAuthError, match="401") as caught:
            await wrong.chat({"model": "smollm2", "messages": FRANCE, "max_tokens": 4})
        assert attempts.count == 1
        assert caught.value.upstream_status == 401
        assert not await wrong.health_check()
    assert classify_failure(caught.value) is FallbackReason.UNAVAILABLE


async def test_a_closed_port_is_unavailable_after_the_retries(
    counted: tuple[httpx.AsyncClient, Attempts],
) -> None:
    client, attempts = counted
    closed = settings(f"http://127.0.0.1:{free_port()}/v1", api_key_env=None)
    async with client, OpenAICompatibleProvider(closed, client) as nobody:
        with pytest.raises(TargetUnavailableError, match="cannot connect") as caught:
            await nobody.chat({"model": "smollm2", "messages": FRANCE})
    assert attempts.count == 1 + closed.max_retries
    assert classify_failure(caught.value) is FallbackReason.UNAVAILABLE


async def test_a_too_short_first_token_timeout_times_out(
    cloud_standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long prompt keeps prefill busy for seconds, so the deadline passes after the upstream
    # accepted the request and before its first chunk, not while connecting.
    monkeypatch.setenv(KEY_ENV, cloud_standin.api_key)
    impatient = settings(cloud_standin.base_url, first_token_timeout_s=0.3)
    long_question = [{"role": "user", "content": "Paris " * 1500 + "What is this city?"}]
    body = {"model": "smollm2", "messages": long_question, "max_tokens": 4}
    async with OpenAICompatibleProvider(impatient) as provider:
        started = time.monotonic()
        with pytest.raises(TargetTimeoutError, match="first chunk") as caught:
            await anext(provider.stream_chat(body))
        assert time.monotonic() - started < 5.0
        assert await provider.health_check()
    assert classify_failure(caught.value) is FallbackReason.TIMEOUT
