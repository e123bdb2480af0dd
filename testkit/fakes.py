"""Fakes for unit tests of the service layer (no Ray cluster, no vLLM engine).

- :class:`FakeBackend` answers with canned OpenAI bodies or SSE chunks, or raises before its
  first chunk; :class:`SlowBackend` waits on a gate before answering.
- :class:`~testkit.recorders.MetricRecorder` (metric classes that record every call) and
  :class:`~testkit.recorders.FakeClock` come from :mod:`testkit.recorders`.
- :func:`build_gateway` wires a real router, circuit board and metrics around fake backends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engine.protocol import Capability, ModelFormat, ModelRecord, ModelType, SourceKind
from router.circuit import CircuitBoard
from router.planner import Router
from router.settings import CloudModelSettings, RouterSettings
from service.backends.protocol import DONE, Answer, Backend, Json, RawRequest, sse
from service.cache import ResponseCache
from service.gateway import Gateway
from service.moderation import CATEGORIES
from testkit.recorders import FakeClock, MetricRecorder

C = Capability

NANO = "local/llama/chat-nano"
JSON_MINI = "local/llama/json-mini"
R1 = "local/deepseek/r1-mini"
EMBED = "local/embedding/minilm"
CLOUD = "cloud/acme/big"
LOCAL_IDS = (NANO, JSON_MINI, R1, EMBED)


# --- canned OpenAI bodies -------------------------------------------------------------------


def chat_body(model: str, content: str = "hello", *, prompt_tokens: int = 5, completion_tokens: int = 2) -> Json:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chunk(model: str, content: str | None = None, *, role: str | None = None, finish: str | None = None) -> Json:
    delta: Json = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def stream_chunks(model: str, words: Iterable[str]) -> list[Json]:
    """A whole streamed answer: the role chunk, one chunk per word, the finish chunk."""
    return [
        chunk(model, "", role="assistant"),
        *(chunk(model, w) for w in words),
        chunk(model, finish="stop"),
    ]


def embeddings_body(model: str, inputs: int = 1) -> Json:
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(inputs)],
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }


def verdict(**flags: bool) -> str:
    """A moderation verdict as a chat model answers it under the moderation schema."""
    return json.dumps({c: flags.get(c.replace("-", "_"), False) for c in CATEGORIES})


def cloud_moderation_body(model: str, flagged: bool) -> Json:
    categories = {c: flagged and c == "violence" for c in CATEGORIES}
    return {
        "id": "modr-cloud",
        "model": model,
        "results": [
            {
                "flagged": flagged,
                "categories": categories,
                "category_scores": {c: float(v) for c, v in categories.items()},
            }
        ],
    }


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


# --- backends -------------------------------------------------------------------------------


class FakeBackend(Backend):
    """A target that answers with canned bodies, or raises ``error`` before its first chunk.

    ``error`` may be changed between requests (a target that recovers). ``calls`` lists the
    requests received as ``(method, request)``.
    """

    def __init__(
        self,
        model: str,
        *,
        content: str = "hello",
        words: Iterable[str] = ("Hel", "lo"),
        error: BaseException | None = None,
        healthy: bool = True,
        moderation_flagged: bool = False,
    ) -> None:
        self.model = model
        self.content = content
        self.words = tuple(words)
        self.error = error
        self.is_healthy = healthy
        self.moderation_flagged = moderation_flagged
        self.calls: list[tuple[str, Any]] = []

    async def chat(self, request: Any) -> Answer:
        await self._enter("chat", request)
        request = _view(request)
        if request.stream:
            return Answer(chunks=self._stream(request.model))
        return Answer(body=chat_body(request.model, self.content))

    async def completions(self, request: Any) -> Answer:
        await self._enter("completions", request)
        request = _view(request)
        body = chat_body(request.model, self.content) | {"object": "text_completion"}
        return Answer(body=body)

    async def embeddings(self, request: Any) -> Json:
        await self._enter("embeddings", request)
        request = _view(request)
        count = len(request.input) if isinstance(request.input, list) else 1
        return embeddings_body(request.model, count)

    async def tokenize(self, request: Any) -> Json:
        await self._enter("tokenize", request)
        return {"tokens": [1, 2, 3], "count": 3, "max_model_len": 2048}

    async def moderations(self, body: Json) -> Json:
        await self._enter("moderations", body)
        return cloud_moderation_body(body.get("model", self.model), self.moderation_flagged)

    async def healthy(self) -> bool:
        return self.is_healthy

    @property
    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    async def _enter(self, method: str, request: Any) -> None:
        self.calls.append((method, request))
        if self.error is not None:
            raise self.error

    async def _stream(self, model: str) -> AsyncIterator[str]:
        for payload in stream_chunks(model, self.words):
            yield sse(payload)
        yield DONE


class SlowBackend(FakeBackend):
    """A FakeBackend that holds every request until ``release`` is set; ``entered`` says one arrived."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def _enter(self, method: str, request: Any) -> None:
        self.entered.set()
        await self.release.wait()
        await super()._enter(method, request)


# --- the gateway under test -----------------------------------------------------------------


def record(
    model_id: str, capabilities: Iterable[Capability], *, context: int, size_bytes: int,
    path: Path = Path("/nonexistent/checkpoint"),
) -> ModelRecord:
    """A registered model with chosen capabilities (bf16: two bytes a parameter)."""
    family, name = model_id.split("/")[1:]
    return ModelRecord(
        id=model_id, name=name, family=ModelType(family), format=ModelFormat.SAFETENSORS,
        path=path, source=SourceKind.PATH, source_ref=str(path), size_bytes=size_bytes,
        architecture="LlamaForCausalLM", context_length=context, dtype="bfloat16",
        capabilities=list(capabilities),
    )


def demo_records() -> list[ModelRecord]:
    """A nano chat model, a mini one with JSON schema and moderation, a mini reasoner, an embedder."""
    return [
        record(NANO, [C.CHAT, C.COMPLETION], context=2048, size_bytes=270_000_000),
        record(JSON_MINI, [C.CHAT, C.COMPLETION, C.JSON_SCHEMA, C.MODERATION], context=4096, size_bytes=3_000_000_000),
        record(R1, [C.CHAT, C.REASONING], context=8192, size_bytes=14_000_000_000),
        record(EMBED, [C.EMBEDDINGS], context=512, size_bytes=90_000_000),
    ]


def router_settings(**overrides: Any) -> RouterSettings:
    """Fallbacks of NANO: the cloud model then JSON_MINI (the cloud one is still tried last)."""
    values: dict[str, Any] = {
        "fallbacks": {NANO: [CLOUD, JSON_MINI]},
        "cloud_models": [
            CloudModelSettings(
                provider="acme", model="big", capabilities=[C.CHAT, C.JSON_SCHEMA, C.MODERATION],
                context_length=16384,
            )
        ],
    }
    return RouterSettings(**(values | overrides))


@dataclass
class Stack:
    """A real gateway over fake backends, with the pieces a test inspects."""

    gateway: Gateway
    backends: dict[str, FakeBackend]
    recorder: MetricRecorder
    clock: FakeClock


def build_gateway(
    settings: RouterSettings | None = None,
    records: list[ModelRecord] | None = None,
    backends: Mapping[str, Backend] | None = None,
    output_default: int | None = None,
    cache: ResponseCache | None = None,
    adapters: dict[str, str] | None = None,
) -> Stack:
    """The gateway over ``records`` plus the cloud models in ``settings``; a FakeBackend each
    unless ``backends`` names one. ``adapters`` (adapter id -> base id, read at each lookup) are
    the registered LoRA adapters."""
    settings = settings or router_settings()
    index = adapters if adapters is not None else {}
    router = Router.build(records if records is not None else demo_records(), settings, adapters=lambda: index)
    chosen: dict[str, Any] = {t.id: FakeBackend(t.id) for t in router.targets} | dict(backends or {})
    recorder, clock = MetricRecorder(), FakeClock()
    gateway = Gateway(
        router, chosen, CircuitBoard(settings.circuit, clock=clock), recorder.metrics(), output_default, cache=cache,
        revisions={t.id: "r1" for t in router.targets},
    )
    return Stack(gateway, chosen, recorder, clock)


def _view(request: Any) -> Any:
    """Attribute access to a cloud target's raw JSON body, as a validated request has it."""
    if isinstance(request, RawRequest):
        body = request.body
        return SimpleNamespace(stream=body.get("stream", False), model=body["model"], input=body.get("input"))
    return request
