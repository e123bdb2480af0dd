"""The real replica and cloud backends under the API, over a fake Serve handle and a fake provider.

A stream that breaks after its first chunk must end with an OpenAI error event and ``[DONE]``;
an error before the first chunk must become a fallback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ray.serve.llm.openai_api_models import ChatCompletionResponse

from router.providers.errors import StreamInterruptedError
from router.providers.protocol import CloudProvider
from router.providers.settings import CloudProviderSettings
from service.api.app import create_app
from service.backends.cloud import CloudBackend
from service.backends.protocol import Json
from service.backends.replica import ReplicaBackend
from service.config import TurnoutConfig
from service.serve_overrides.openai_types import ErrorResponse
from testkit.fakes import (
    CLOUD,
    JSON_MINI,
    NANO,
    build_gateway,
    chat_body,
    chunk,
    cloud_moderation_body,
    embeddings_body,
    sse_events,
    stream_chunks,
)

HELLO = [{"role": "user", "content": "hello"}]


def provider_settings(name: str = "acme") -> CloudProviderSettings:
    return CloudProviderSettings(name=name, base_url=f"http://{name}.invalid/v1")


class FakeProvider(CloudProvider):
    """A cloud provider whose streams can break off after ``fail_after`` chunks."""

    kind = "fake"

    def __init__(self, *, words: Iterable[str] = ("Hel", "lo"), fail_after: int | None = None) -> None:
        super().__init__(provider_settings())
        self.words = tuple(words)
        self.fail_after = fail_after
        self.bodies: list[Json] = []
        self.closed_streams = 0

    async def chat(self, body: Json) -> Json:
        self.bodies.append(body)
        return chat_body(body["model"])

    async def stream_chat(self, body: Json):  # type: ignore[override]
        self.bodies.append(body)
        try:
            for sent, payload in enumerate(stream_chunks(body["model"], self.words)):
                if self.fail_after is not None and sent >= self.fail_after:
                    raise StreamInterruptedError("upstream closed the connection")
                yield payload
        finally:
            self.closed_streams += 1

    async def completions(self, body: Json) -> Json:
        return chat_body(body["model"])

    def stream_completions(self, body: Json):  # type: ignore[override]
        return self.stream_chat(body)

    async def embeddings(self, body: Json) -> Json:
        return embeddings_body(body["model"])

    async def moderations(self, body: Json) -> Json:
        self.bodies.append(body)
        return cloud_moderation_body(body["model"], True)

    async def health_check(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class FakeResponses:
    """A stand-in for Ray Serve's DeploymentResponseGenerator over ``items``.

    An item that is an exception is raised instead of yielded; ``delay_s`` delays the first item.
    """

    def __init__(self, items: Iterable[Any], delay_s: float = 0.0) -> None:
        self._items = list(items)
        self._delay_s = delay_s
        self.cancelled = False

    def __aiter__(self) -> FakeResponses:
        return self

    async def __anext__(self) -> Any:
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
            self._delay_s = 0.0
        if not self._items:
            raise StopAsyncIteration
        item = self._items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Method:
    call: Callable[..., Any]

    def remote(self, *args: Any) -> Any:
        return self.call(*args)


@dataclass
class FakeHandle:
    """A Ray Serve handle of an LLMServer: each call returns the next :class:`FakeResponses`."""

    responses: list[FakeResponses]
    healthy: bool = True
    requests: list[Any] = field(default_factory=list)
    app_name: str = "turnout"
    deployment_name: str = "model:chat-nano"

    def options(self, **_: Any) -> FakeHandle:
        return self

    def _next(self, request: Any, _raw: Any = None) -> FakeResponses:
        self.requests.append(request)
        return self.responses.pop(0)

    def __getattr__(self, name: str) -> _Method:
        if name in ("chat", "completions", "embeddings", "tokenize"):
            return _Method(self._next)
        if name == "check_health":
            return _Method(self._health)
        raise AttributeError(name)

    async def _health(self) -> None:
        if not self.healthy:
            raise ConnectionError("replica down")



def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def error_response(message: str, code: int) -> ErrorResponse:
    return ErrorResponse.model_validate({"error": {"message": message, "type": "BadRequestError", "code": code}})


def client_with(backends: dict) -> tuple[TestClient, object]:
    stack = build_gateway(backends=backends)
    return TestClient(create_app(stack.gateway, TurnoutConfig(models=[]))), stack


def post_chat(client: TestClient, model: str, **fields):
    return client.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **fields})


def replica(*responses: FakeResponses, timeout_s: float = 5.0) -> tuple[ReplicaBackend, FakeHandle]:
    handle = FakeHandle(list(responses))
    return ReplicaBackend(NANO, handle, timeout_s), handle  # type: ignore[arg-type]


def test_replica_non_streamed_answer():
    body = ChatCompletionResponse.model_validate(chat_body(NANO))
    backend, handle = replica(FakeResponses([body]))
    client, _ = client_with({NANO: backend})
    response = post_chat(client, NANO)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello"
    assert handle.requests[0].model == NANO


def test_replica_stream_relays_batches_and_done():
    first = [sse(chunk(NANO, "", role="assistant")), sse(chunk(NANO, "Hel"))]
    rest = [sse(chunk(NANO, "lo")), "data: [DONE]\n\n"]
    backend, handle = replica(FakeResponses([first, rest]))
    client, _ = client_with({NANO: backend})
    events = sse_events(post_chat(client, NANO, stream=True).text)
    assert events[-1] == "[DONE]"
    assert len(events) == 4


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("replica died"), error_response("engine dead", 500)],
)
def test_replica_stream_failing_after_its_first_chunk_ends_with_an_error_event(failure):
    responses = FakeResponses([[sse(chunk(NANO, "", role="assistant")), sse(chunk(NANO, "Hel"))], failure])
    backend, _ = replica(responses)
    client, _ = client_with({NANO: backend})
    response = post_chat(client, NANO, stream=True)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] >= 500 and error["message"]
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"


def test_replica_stream_left_early_is_cancelled():
    responses = FakeResponses([[sse(chunk(NANO, "a"))], RuntimeError("boom")])
    backend, _ = replica(responses)
    client, _ = client_with({NANO: backend})
    post_chat(client, NANO, stream=True)
    assert responses.cancelled


def test_replica_without_a_first_token_in_time_falls_back():
    slow = FakeResponses([[sse(chunk(NANO, "late"))]], delay_s=2.0)
    backend, _ = replica(slow, timeout_s=0.05)
    client, _ = client_with({NANO: backend})
    response = post_chat(client, NANO, stream=True)
    assert response.status_code == 200
    assert response.headers["X-Turnout-Route"] == f"{NANO}=timeout, {JSON_MINI}=served"
    assert slow.cancelled


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (error_response("This model's maximum context length is 2048 tokens", 400), "context_length"),
        (error_response("engine overloaded", 503), "unavailable"),
        (ConnectionError("refused"), "unavailable"),
    ],
)
def test_replica_errors_before_the_first_chunk_fall_back(error, reason):
    backend, _ = replica(FakeResponses([error]))
    client, _ = client_with({NANO: backend})
    response = post_chat(client, NANO)
    assert response.status_code == 200
    assert response.headers["X-Turnout-Route"] == f"{NANO}={reason}, {JSON_MINI}=served"


def test_replica_client_error_is_returned_with_its_status():
    backend, _ = replica(FakeResponses([error_response("bad top_k", 422)]))
    client, stack = client_with({NANO: backend})
    response = post_chat(client, NANO)
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "bad top_k"
    assert stack.backends[JSON_MINI].calls == []


def test_replica_that_ends_without_answering_falls_back():
    backend, _ = replica(FakeResponses([]))
    client, _ = client_with({NANO: backend})
    assert post_chat(client, NANO).headers["X-Turnout-Route"] == f"{NANO}=unavailable, {JSON_MINI}=served"


async def test_replica_health():
    backend, handle = replica()
    assert await backend.healthy() is True
    handle.healthy = False
    assert await backend.healthy() is False


def cloud(provider: FakeProvider) -> CloudBackend:
    stack = build_gateway()
    return CloudBackend(stack.gateway.router.target(CLOUD), provider)


def test_cloud_stream_relabels_chunks_with_the_target_id():
    provider = FakeProvider()
    client, _ = client_with({CLOUD: cloud(provider)})
    response = post_chat(client, CLOUD, stream=True)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert {json.loads(e)["model"] for e in events[:-1]} == {CLOUD}
    assert provider.bodies[0]["model"] == "big"
    assert provider.bodies[0]["stream"] is True
    assert provider.closed_streams == 1


def test_cloud_stream_interrupted_after_its_first_chunk_ends_with_an_error_event():
    provider = FakeProvider(fail_after=2)
    client, _ = client_with({CLOUD: cloud(provider)})
    response = post_chat(client, CLOUD, stream=True)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert len(events) == 4  # two chunks, the error, [DONE]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"] == {
        "message": "upstream closed the connection", "type": "stream_interrupted", "code": 502,
    }
    assert provider.closed_streams == 1


def test_cloud_stream_failing_before_its_first_chunk_is_a_503_when_nothing_is_left():
    provider = FakeProvider(fail_after=0)
    client, _ = client_with({CLOUD: cloud(provider)})
    response = post_chat(client, CLOUD, stream=True)
    assert response.status_code == 503
    assert response.headers["X-Turnout-Route"] == f"{CLOUD}=unavailable"


def test_cloud_non_streamed_answer_and_moderation():
    provider = FakeProvider()
    client, _ = client_with({CLOUD: cloud(provider)})
    assert post_chat(client, CLOUD).json()["model"] == CLOUD
    response = client.post("/v1/moderations", json={"model": CLOUD, "input": "x"})
    assert response.status_code == 200
    assert response.json()["model"] == CLOUD
    assert provider.bodies[-1] == {"model": "big", "input": "x"}
