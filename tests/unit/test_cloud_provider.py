"""The cloud provider layer above the network, against ``httpx.MockTransport`` upstreams."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from engine.errors import ClientError
from router.errors import (
    ContextLengthExceededError,
    TargetOverloadedError,
    TargetTimeoutError,
    TargetUnavailableError,
)
from router.fallback import classify_failure
from router.protocol import FallbackReason
from router.providers import (
    PROVIDER_KINDS,
    CloudProviderSettings,
    OpenAICompatibleProvider,
    StreamInterruptedError,
    UpstreamAuthError,
    UpstreamClientError,
    make_provider,
)
from router.providers.retry import Backoff, retry_after_s
from router.providers.sse import sse_data

KEY = "sk-unit-9f8e7d6c5b4a39281706"
KEY_ENV = "TURNOUT_TEST_CLOUD_KEY"
BASE = "https://api.acme.test/v1"
CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
ANSWER = {"id": "c1", "object": "chat.completion", "choices": [{"message": {"content": "Hello"}}]}

Handler = Callable[[httpx.Request], Any]


class Upstream:
    """A scripted upstream: answers requests with the next response, and records them."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return await answer(request)
        return answer

    @property
    def calls(self) -> int:
        return len(self.requests)

    def body(self, index: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[index].content)


def settings(**overrides: Any) -> CloudProviderSettings:
    values: dict[str, Any] = {
        "name": "acme",
        "base_url": BASE,
        "max_retries": 2,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.01,
    }
    return CloudProviderSettings(**(values | overrides))


def provider(upstream: Upstream, **overrides: Any) -> OpenAICompatibleProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    return OpenAICompatibleProvider(settings(**overrides), client=client)


def error_body(message: str, code: str | None = None, param: str | None = None) -> dict:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return {"error": error}


def sse(*events: dict | str) -> bytes:
    return "".join(
        f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n" for event in events
    ).encode()


def chunk(text: str) -> dict:
    choice = {"index": 0, "delta": {"content": text}}
    return {"object": "chat.completion.chunk", "choices": [choice]}


def streamed(body: bytes | AsyncIterator[bytes], status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body)


async def collect(stream: AsyncIterator[dict]) -> list[dict]:
    return [item async for item in stream]


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv(KEY_ENV, KEY)
    return {"api_key_env": KEY_ENV}


# Requests.


async def test_chat_sends_the_mapped_model_with_the_key_and_leaves_the_body_alone(keyed) -> None:
    upstream = Upstream(httpx.Response(200, json=ANSWER))
    body = dict(CHAT, stream=True, stream_options={"include_usage": True})
    acme = provider(
        upstream, model_map={"smol": "acme-small-2"}, extra_headers={"X-Team": "t1"}, **keyed
    )
    assert await acme.chat(body) == ANSWER
    request = upstream.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-team"] == "t1"
    sent = upstream.body()
    assert sent["model"] == "acme-small-2"
    assert sent["stream"] is False and "stream_options" not in sent
    assert body["model"] == "smol" and body["stream"] is True


async def test_unmapped_model_names_are_sent_unchanged_and_no_key_means_no_header() -> None:
    upstream = Upstream(httpx.Response(200, json={"data": []}))
    await provider(upstream, model_map={"other": "x"}).embeddings({"model": "e5", "input": "a"})
    assert upstream.body()["model"] == "e5"
    assert str(upstream.requests[0].url) == f"{BASE}/embeddings"
    assert "authorization" not in upstream.requests[0].headers


async def test_each_endpoint_has_its_path() -> None:
    upstream = Upstream(httpx.Response(200, json={"ok": True}))
    acme = provider(upstream)
    await acme.completions({"model": "m", "prompt": "p"})
    await acme.moderations({"input": "text"})
    paths = [request.url.path for request in upstream.requests]
    assert paths == ["/v1/completions", "/v1/moderations"]


# Retries.


async def test_retries_429_and_500_with_backoff_then_succeeds() -> None:
    upstream = Upstream(
        httpx.Response(429, json=error_body("slow down")),
        httpx.Response(500, text="internal error"),
        httpx.Response(200, json=ANSWER),
    )
    assert await provider(upstream).chat(CHAT) == ANSWER
    assert upstream.calls == 3


async def test_retry_after_is_honoured() -> None:
    upstream = Upstream(
        httpx.Response(429, headers={"Retry-After": "0.3"}, json=error_body("rate limited")),
        httpx.Response(200, json=ANSWER),
    )
    started = time.monotonic()
    assert await provider(upstream, backoff_max_s=1.0).chat(CHAT) == ANSWER
    assert time.monotonic() - started >= 0.3
    assert upstream.calls == 2


async def test_retry_after_beyond_the_backoff_cap_falls_back_at_once() -> None:
    later = httpx.Response(429, headers={"Retry-After": "60"}, json=error_body("later"))
    upstream = Upstream(later)
    with pytest.raises(TargetOverloadedError):
        await provider(upstream).chat(CHAT)
    assert upstream.calls == 1


async def test_gives_up_after_max_retries() -> None:
    upstream = Upstream(httpx.Response(503, json=error_body("down for maintenance")))
    with pytest.raises(TargetUnavailableError, match="down for maintenance") as caught:
        await provider(upstream, max_retries=3).chat(CHAT)
    assert upstream.calls == 4
    assert classify_failure(caught.value) is FallbackReason.UNAVAILABLE


async def test_a_400_is_not_retried_and_is_the_users_fault() -> None:
    bad = error_body("temperature must be <= 2", param="temperature")
    upstream = Upstream(httpx.Response(400, json=bad))
    with pytest.raises(UpstreamClientError) as caught:
        await provider(upstream).chat(CHAT)
    assert upstream.calls == 1
    error = caught.value
    assert isinstance(error, ClientError)
    assert error.status_code == 400 and error.param == "temperature"
    assert "temperature must be <= 2" in error.message and "acme" in error.message
    assert classify_failure(error) is None


async def test_connection_failures_are_retried_then_unavailable() -> None:
    upstream = Upstream(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(TargetUnavailableError, match="Connection refused") as caught:
        await provider(upstream).chat(CHAT)
    assert upstream.calls == 3
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_read_timeouts_are_not_retried() -> None:
    upstream = Upstream(httpx.ReadTimeout("timed out"))
    with pytest.raises(TargetTimeoutError) as caught:
        await provider(upstream).chat(CHAT)
    assert upstream.calls == 1
    assert classify_failure(caught.value) is FallbackReason.TIMEOUT


# Error mapping.


@pytest.mark.parametrize(
    ("status", "body", "error_type", "reason"),
    [
        (429, error_body("rate limit"), TargetOverloadedError, FallbackReason.OVERLOADED),
        (500, error_body("boom"), TargetUnavailableError, FallbackReason.UNAVAILABLE),
        (502, "<html>bad gateway</html>", TargetUnavailableError, FallbackReason.UNAVAILABLE),
        (503, error_body("overloaded"), TargetUnavailableError, FallbackReason.UNAVAILABLE),
        (504, "gateway timeout", TargetTimeoutError, FallbackReason.TIMEOUT),
        (401, {"error": "Unauthorized"}, UpstreamAuthError, FallbackReason.UNAVAILABLE),
        (403, error_body("no access to model"), UpstreamAuthError, FallbackReason.UNAVAILABLE),
        (404, error_body("model not found"), UpstreamClientError, None),
        (422, {"detail": "bad field"}, UpstreamClientError, None),
        (
            400,
            error_body("This model's maximum context length is 2048 tokens. However, ..."),
            ContextLengthExceededError,
            FallbackReason.CONTEXT_LENGTH,
        ),
        (400, error_body("too long", code="context_length_exceeded"), ContextLengthExceededError,
         FallbackReason.CONTEXT_LENGTH),
    ],
)
async def test_upstream_statuses_map_to_fallback_reasons(status, body, error_type, reason) -> None:
    content = {"json": body} if isinstance(body, dict) else {"text": body}
    upstream = Upstream(httpx.Response(status, **content))
    with pytest.raises(error_type) as caught:
        await provider(upstream, max_retries=0).chat(CHAT)
    assert classify_failure(caught.value) is reason
    assert f"upstream answered {status}" in caught.value.message


async def test_upstream_client_errors_keep_the_upstream_status() -> None:
    missing = error_body("no such model", code="model_not_found")
    upstream = Upstream(httpx.Response(404, json=missing))
    with pytest.raises(UpstreamClientError) as caught:
        await provider(upstream).chat(CHAT)
    assert caught.value.status_code == 404 and caught.value.code == "model_not_found"


async def test_a_huge_error_body_is_clipped() -> None:
    upstream = Upstream(httpx.Response(400, text="x" * 10_000))
    with pytest.raises(UpstreamClientError) as caught:
        await provider(upstream).chat(CHAT)
    assert len(caught.value.message) < 600


async def test_invalid_json_answer_is_unavailable() -> None:
    upstream = Upstream(httpx.Response(200, text="<html>captive portal</html>"))
    with pytest.raises(TargetUnavailableError, match="invalid JSON"):
        await provider(upstream).chat(CHAT)


# Streams.


async def test_stream_parses_chunks_up_to_done() -> None:
    body = (
        b": keep-alive\n\n"
        + sse(chunk("The"), chunk(" capital"))
        + b"event: message\ndata: " + json.dumps(chunk(" is")).encode() + b"\n\n"
        + sse("[DONE]")
        + sse(chunk("ignored after done"))
    )
    upstream = Upstream(streamed(body))
    chunks = await collect(provider(upstream).stream_chat(CHAT))
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "The capital is"
    assert upstream.body()["stream"] is True


async def test_stream_completions_use_their_path() -> None:
    upstream = Upstream(streamed(sse({"choices": [{"text": "a"}]}, "[DONE]")))
    chunks = await collect(provider(upstream).stream_completions({"model": "m", "prompt": "p"}))
    assert chunks == [{"choices": [{"text": "a"}]}]
    assert upstream.requests[0].url.path == "/v1/completions"


async def test_stream_is_retried_before_its_first_chunk() -> None:
    upstream = Upstream(
        streamed(b"", status=503), streamed(sse(chunk("ok"), "[DONE]"))
    )
    assert len(await collect(provider(upstream).stream_chat(CHAT))) == 1
    assert upstream.calls == 2


async def test_an_error_event_before_the_first_chunk_raises_before_commit() -> None:
    event = {"error": {"message": "bad logit_bias", "type": "BadRequestError", "code": 400}}
    upstream = Upstream(streamed(sse(event, "[DONE]")))
    stream = provider(upstream).stream_chat(CHAT)
    with pytest.raises(UpstreamClientError, match="bad logit_bias"):
        await anext(stream)
    assert upstream.calls == 1


async def test_a_stream_that_breaks_midway_raises_after_the_first_chunk() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield sse(chunk("Par"))
        yield sse(chunk("is"))
        raise httpx.ReadError("connection reset by peer")

    upstream = Upstream(streamed(body()))
    stream = provider(upstream).stream_chat(CHAT)
    received = [await anext(stream), await anext(stream)]
    with pytest.raises(StreamInterruptedError, match="connection reset") as caught:
        await anext(stream)
    assert len(received) == 2 and upstream.calls == 1
    assert isinstance(caught.value.__cause__, TargetUnavailableError)
    assert caught.value.type == "stream_interrupted"


@pytest.mark.parametrize(
    "tail",
    [b"", sse({"error": {"message": "engine died", "code": 500}})],
    ids=["no-done", "error-event"],
)
async def test_a_stream_that_ends_badly_after_its_first_chunk_is_interrupted(tail) -> None:
    upstream = Upstream(streamed(sse(chunk("Hi")) + tail))
    stream = provider(upstream).stream_chat(CHAT)
    await anext(stream)
    with pytest.raises(StreamInterruptedError):
        await anext(stream)


async def test_a_slow_first_chunk_times_out() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return streamed(sse(chunk("late"), "[DONE]"))

    upstream = Upstream(slow)
    started = time.monotonic()
    with pytest.raises(TargetTimeoutError, match="first chunk") as caught:
        await anext(provider(upstream, first_token_timeout_s=0.05).stream_chat(CHAT))
    assert time.monotonic() - started < 2
    assert upstream.calls == 1
    assert classify_failure(caught.value) is FallbackReason.TIMEOUT


async def test_closing_a_stream_early_closes_the_response() -> None:
    class Body(httpx.AsyncByteStream):
        closed = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield sse(chunk("a"))
            await asyncio.sleep(5)
            yield sse("[DONE]")

        async def aclose(self) -> None:
            self.closed = True

    body = Body()
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)
    stream = provider(Upstream(response)).stream_chat(CHAT)
    await anext(stream)
    await stream.aclose()
    assert body.closed


# The API key.


def test_key_is_read_from_the_environment(keyed) -> None:
    assert settings(**keyed).api_key.get_secret_value() == KEY


def test_key_is_read_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "api-key"
    secret.write_text(f"  {KEY}\n")
    assert settings(api_key_file=secret).api_key.get_secret_value() == KEY


def test_the_environment_wins_over_the_file(keyed, tmp_path: Path) -> None:
    secret = tmp_path / "api-key"
    secret.write_text("sk-from-file")
    assert settings(api_key_file=secret, **keyed).api_key.get_secret_value() == KEY


def test_no_key_configured_means_none() -> None:
    assert settings().api_key is None


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("unset-env", "TURNOUT_TEST_CLOUD_KEY is unset or empty"),
        ("missing-file", "No such file"),
        ("empty-file", "is empty"),
        ("binary-file", "not UTF-8"),
        ("two-line-file", "whitespace"),
    ],
)
def test_a_configured_key_that_cannot_be_read_fails_clearly(
    setup: str, match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    secret = tmp_path / "api-key"
    contents = {
        "empty-file": b"\n",
        "binary-file": b"\xff" + KEY.encode(),
        "two-line-file": f"{KEY}\n{KEY}".encode(),
    }
    if setup in contents:
        secret.write_bytes(contents[setup])
    source = {"api_key_env": KEY_ENV} if setup == "unset-env" else {"api_key_file": secret}
    with pytest.raises(ValidationError, match=match) as caught:
        settings(**source)
    assert KEY not in str(caught.value)


async def test_the_key_never_shows(keyed, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = error_body(f"Incorrect API key provided: {KEY}. Header was 'Bearer {KEY}'")
    upstream = Upstream(
        httpx.Response(429, json=leaky),
        httpx.Response(401, json=leaky),
        streamed(sse({"error": {"message": f"key {KEY} revoked", "code": 401}})),
        streamed(sse(chunk("a"), {"error": {"message": f"key {KEY} revoked", "code": 500}})),
    )
    acme = provider(upstream, **keyed)
    errors: list[BaseException] = []
    with pytest.raises(UpstreamAuthError) as caught:
        await acme.chat(CHAT)
    errors.append(caught.value)
    with pytest.raises(UpstreamAuthError) as caught:
        await anext(acme.stream_chat(CHAT))
    errors.append(caught.value)
    stream = acme.stream_chat(CHAT)
    await anext(stream)
    with pytest.raises(StreamInterruptedError) as caught:
        await anext(stream)
    errors.append(caught.value)

    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in upstream.requests)
    shown = [repr(acme), str(acme), repr(acme.settings), str(acme.settings)]
    shown += [acme.settings.model_dump_json(), repr(upstream.requests[0].headers)]
    for error in errors:
        shown += [str(error), repr(error), error.message]
        shown.append("".join(traceback.format_exception(error)))
    shown += [record.getMessage() for record in caplog.records]
    assert any("retry 1" in record.getMessage() for record in caplog.records)
    assert "[redacted]" in errors[0].message
    for text in shown:
        assert KEY not in text


# Health, lifecycle, registry, settings.


@pytest.mark.parametrize(
    ("answer", "healthy"),
    [
        (httpx.Response(200, json={"data": []}), True),
        (httpx.Response(401, json={"error": "Unauthorized"}), False),
        (httpx.ConnectError("refused"), False),
    ],
)
async def test_health_check(answer, healthy: bool, keyed) -> None:
    upstream = Upstream(answer)
    assert await provider(upstream, **keyed).health_check() is healthy
    assert upstream.requests[0].method == "GET" and upstream.requests[0].url.path == "/v1/models"


async def test_close_keeps_an_injected_client_open() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(Upstream(httpx.Response(200))))
    async with OpenAICompatibleProvider(settings(), client=client):
        pass
    assert not client.is_closed
    await client.aclose()
    owning = make_provider(settings())
    await owning.close()
    assert owning._client.is_closed


def test_registry_is_read_only_and_builds_by_kind() -> None:
    assert PROVIDER_KINDS["openai"] is OpenAICompatibleProvider
    with pytest.raises(TypeError):
        PROVIDER_KINDS["other"] = OpenAICompatibleProvider  # type: ignore[index]
    assert isinstance(make_provider(settings()), OpenAICompatibleProvider)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"kind": "carrier-pigeon"}, "unknown provider kind"),
        ({"extra_headers": {"Authorization": "Bearer x"}}, "api_key_env or api_key_file"),
        ({"backoff_initial_s": 2.0, "backoff_max_s": 1.0}, "must not exceed"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"api_key": "sk-inline"}, "Extra inputs are not permitted"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_settings_reject_what_cannot_work(overrides: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        settings(**overrides)


def test_base_url_loses_its_trailing_slash() -> None:
    assert settings(base_url="http://h:1/v1/").base_url == "http://h:1/v1"


# Building blocks.


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    top = Backoff(initial_s=1.0, max_s=5.0, max_retries=4, uniform=lambda low, high: high)
    bottom = Backoff(initial_s=1.0, max_s=5.0, max_retries=4, uniform=lambda low, high: low)
    assert [top.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert [bottom.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]
    assert top.delay(5) is None
    assert bottom.delay(1, retry_after=3.0) == 3.0
    assert top.delay(1, retry_after=6.0) is None


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    headers = httpx.Headers
    assert retry_after_s(headers({"Retry-After": "7"})) == 7.0
    assert retry_after_s(headers({"retry-after-ms": "250", "Retry-After": "7"})) == 0.25
    assert retry_after_s(headers({"Retry-After": "Thu, 01 Jan 2026 12:00:30 GMT"}), now) == 30.0
    assert retry_after_s(headers({"Retry-After": "Thu, 01 Jan 2026 11:00:00 GMT"}), now) == 0.0
    assert retry_after_s(headers({"Retry-After": "soon"})) is None
    assert retry_after_s(headers({})) is None


async def test_sse_data_joins_multiline_data_and_skips_the_rest() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [": comment", "event: x", "data: a", "data:b", "", "", "id: 3", "data: last"]:
            yield line

    assert [data async for data in sse_data(lines())] == ["a\nb", "last"]
