"""The edge's pieces without Ray running: the in-process backend and the graph's topology."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ray.serve.llm.openai_api_models import ChatCompletionResponse

from engine.errors import ConfigError
from engine.launch.settings import Platform
from engine.protocol import Capability
from router.errors import TargetOverloadedError, TargetUnavailableError
from service.backends.local import LocalServerBackend
from service.config import ServerSettings, TurnoutConfig
from service.edge import TurnoutEdge
from service.graph import build_graph, edge_model
from service.model_config import ModelSettings
from service.serve_overrides.openai_types import ErrorResponse
from testkit.fakes import record
from tests.checkpoints import write_checkpoint

CHAT_MODEL = "local/llama/tiny"
OTHER = "local/deepseek/tiny"
EMBEDDER = "local/embedding/tiny"


def _response(text: str = "Paris") -> ChatCompletionResponse:
    return ChatCompletionResponse.model_validate({
        "id": "c1", "object": "chat.completion", "created": 1, "model": CHAT_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    })


class FakeServer:
    """The LLMServer methods the backend calls, answering with scripted streams."""

    def __init__(self, items: list[Any] | None = None, *, refuse: Exception | None = None, gate: asyncio.Event | None = None) -> None:
        self.items = items if items is not None else [_response()]
        self.refuse = refuse
        self.gate = gate
        self.closed = 0
        self.healthy = True

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        if self.refuse:
            raise self.refuse
        return self._stream()

    completions = chat

    async def check_engine(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine dead")

    async def _stream(self) -> AsyncIterator[Any]:
        try:
            for item in self.items:
                if self.gate is not None and not isinstance(item, (ChatCompletionResponse, ErrorResponse)):
                    await self.gate.wait()
                yield item
        finally:
            self.closed += 1


def _backend(server: FakeServer, max_in_flight: int = 4) -> LocalServerBackend:
    return LocalServerBackend(CHAT_MODEL, server, first_token_timeout_s=5, max_in_flight=max_in_flight)


async def test_a_complete_answer_comes_back_as_json() -> None:
    answer = await _backend(FakeServer()).chat(object())
    assert answer.body["choices"][0]["message"]["content"] == "Paris"


async def test_a_stream_is_relayed_batch_by_batch_and_frees_its_slot() -> None:
    server = FakeServer([["data: {\"a\":1}\n\n", "data: {\"b\":2}\n\n"], ["data: [DONE]\n\n"]])
    backend = _backend(server)
    answer = await backend.completions(object())
    assert backend.in_flight == 1
    chunks = [chunk async for chunk in answer.chunks]
    assert chunks == ["data: {\"a\":1}\n\ndata: {\"b\":2}\n\n", "data: [DONE]\n\n"]
    assert backend.in_flight == 0


async def test_an_error_before_the_first_token_raises_for_fallback() -> None:
    error = ErrorResponse.model_validate({"error": {"message": "engine failed", "type": "x", "code": 503}})
    server = FakeServer([error])
    backend = _backend(server)
    with pytest.raises(TargetUnavailableError):
        await backend.chat(object())
    assert backend.in_flight == 0


async def test_a_server_that_refuses_is_unavailable() -> None:
    with pytest.raises(TargetUnavailableError, match="failed"):
        await _backend(FakeServer(refuse=RuntimeError("no engine"))).chat(object())


async def test_past_its_limit_the_engine_is_overloaded_not_queued() -> None:
    gate = asyncio.Event()
    server = FakeServer([["data: {}\n\n"], ["data: [DONE]\n\n"]], gate=gate)
    gate.set()  # first batches pass at once
    backend = _backend(server, max_in_flight=1)
    held = await backend.chat(object())
    with pytest.raises(TargetOverloadedError):
        await backend.chat(object())
    _ = [chunk async for chunk in held.chunks]
    assert (await backend.chat(object())).chunks is not None  # the slot is free again


async def test_health_follows_the_engine() -> None:
    server = FakeServer()
    backend = _backend(server)
    assert await backend.healthy()
    server.healthy = False
    assert not await backend.healthy()


def _config(**server: Any) -> TurnoutConfig:
    models = [ModelSettings(id=EMBEDDER), ModelSettings(id=OTHER), ModelSettings(id=CHAT_MODEL)]
    return TurnoutConfig(models=models, server=ServerSettings(**server))


def _records(tmp_path: Path) -> list:
    chat = write_checkpoint(tmp_path / "chat")
    embedder = write_checkpoint(tmp_path / "emb", "BertModel", chat_template=None)
    return [
        record(EMBEDDER, [Capability.EMBEDDINGS], context=512, size_bytes=16, path=embedder),
        record(OTHER, [Capability.CHAT], context=2048, size_bytes=16, path=chat),
        record(CHAT_MODEL, [Capability.CHAT, Capability.COMPLETION], context=2048, size_bytes=16, path=chat),
    ]


def test_the_edge_is_the_first_model_that_generates(tmp_path: Path) -> None:
    records = _records(tmp_path)
    assert edge_model(_config(), records) == OTHER
    assert edge_model(_config(edge_model=CHAT_MODEL), records) == CHAT_MODEL
    assert edge_model(_config(data_path="ingress"), records) is None
    assert edge_model(TurnoutConfig(models=[ModelSettings(id=EMBEDDER)]), records[:1]) is None
    with pytest.raises(ConfigError, match="does not generate"):
        edge_model(_config(edge_model=EMBEDDER), records)
    with pytest.raises(ValueError, match="edge_model"):
        _config(edge_model="local/llama/unknown")


class _Store:
    def __init__(self, records: list) -> None:
        self.records = {r.id: r for r in records}
        self.root = Path("/nonexistent-store")

    def get_model(self, model_id: str):
        return self.records[model_id]


def _graph(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: TurnoutConfig):
    store = _Store(_records(tmp_path))
    monkeypatch.setattr("service.graph.LocalModelManager", lambda root: store)
    return build_graph(config, Platform.CPU)


def test_on_the_direct_path_the_edge_model_is_the_ingress(monkeypatch, tmp_path: Path) -> None:
    app = _graph(monkeypatch, tmp_path, _config(edge_model=CHAT_MODEL))
    entry = app._bound_deployment
    assert entry.func_or_class.__name__ == TurnoutEdge.__name__
    assert entry.name == "model:local--llama--tiny"
    assert entry._deployment_config.max_ongoing_requests == 1010  # the entry takes every request
    kwargs = entry.init_kwargs
    assert set(kwargs["handles"]) == {EMBEDDER, OTHER}  # every other model, through a handle
    assert kwargs["max_in_flight"] == 256  # the engine's own limit: beyond it, fallback
    assert [r.id for r in kwargs["records"]] == [EMBEDDER, OTHER, CHAT_MODEL]


def test_the_ingress_path_keeps_an_engine_less_entry(monkeypatch, tmp_path: Path) -> None:
    app = _graph(monkeypatch, tmp_path, _config(data_path="ingress"))
    entry = app._bound_deployment
    assert entry.name == "TurnoutIngress"
    assert set(entry.init_args[2]) == {EMBEDDER, OTHER, CHAT_MODEL}


class SwallowingServer(FakeServer):
    """vLLM's non-streaming chat: cancelled mid-request, it *returns* a "Client disconnected" error."""

    async def _stream(self) -> AsyncIterator[Any]:
        try:
            await asyncio.sleep(60)
            yield _response()
        except asyncio.CancelledError:
            yield ErrorResponse.model_validate({"error": {"message": "Client disconnected", "type": "x", "code": 400}})


async def test_a_slow_first_answer_times_out_for_fallback_not_as_a_client_error() -> None:
    from router.errors import TargetTimeoutError

    backend = LocalServerBackend(CHAT_MODEL, SwallowingServer(), first_token_timeout_s=0.2, max_in_flight=4)
    with pytest.raises(TargetTimeoutError):
        await backend.chat(object())
    assert backend.in_flight == 0


def test_prefix_affinity_on_the_edge_adds_the_ingress_request_router(monkeypatch, tmp_path: Path) -> None:
    models = [
        ModelSettings(id=EMBEDDER), ModelSettings(id=OTHER, routing="prefix_affinity"),
        ModelSettings(id=CHAT_MODEL, routing="prefix_affinity", affinity={"max_imbalance": 2}),
    ]
    config = TurnoutConfig(models=models, server=ServerSettings(edge_model=CHAT_MODEL))
    app = _graph(monkeypatch, tmp_path, config)
    entry = app._bound_deployment
    chosen = {"request_router_class": "service.serve_overrides.request_router:PrefixAffinityRouter"}
    assert entry._deployment_config.request_router_config.request_router_class.endswith("PrefixAffinityRouter")
    assert entry._deployment_config.request_router_config.request_router_kwargs["max_imbalance"] == 2
    router = app._ingress_request_router
    assert router is not None and router._bound_deployment.func_or_class.__name__ == "LLMRouter"
    assert router._bound_deployment.init_kwargs["server"] is app
    other = entry.init_kwargs["handles"][OTHER]._bound_deployment
    assert other._deployment_config.request_router_config.request_router_class == chosen["request_router_class"]
    embedder = entry.init_kwargs["handles"][EMBEDDER]._bound_deployment
    assert "PowerOfTwo" in str(embedder._deployment_config.request_router_config.request_router_class)


def test_default_routing_keeps_haproxy_alone_in_front_of_the_edge(monkeypatch, tmp_path: Path) -> None:
    assert _graph(monkeypatch, tmp_path, _config(edge_model=CHAT_MODEL))._ingress_request_router is None


def test_kv_aware_routing_publishes_kv_events_and_routes_by_them(monkeypatch, tmp_path: Path) -> None:
    models = [
        ModelSettings(id=OTHER, routing="kv_aware"),
        ModelSettings(id=CHAT_MODEL, routing="kv_aware", kv={"prefill_s_per_token": 0.001, "stats_period_s": 1}),
    ]
    config = TurnoutConfig(models=models, server=ServerSettings(edge_model=CHAT_MODEL))
    app = _graph(monkeypatch, tmp_path, config)
    entry = app._bound_deployment
    routing = entry._deployment_config.request_router_config
    assert routing.request_router_class.endswith("kv_router:KvAwareRouter")
    assert routing.request_router_kwargs["prefill_s_per_token"] == 0.001
    assert routing.request_routing_stats_period_s == 1
    assert routing.request_router_kwargs["tokenizer"]  # the checkpoint's directory
    engine = entry.init_kwargs["llm_config"].engine_kwargs
    events = engine["kv_events_config"]
    assert events["enable_kv_cache_events"] and events["publisher"] == "zmq"
    assert events["endpoint"] == events["replay_endpoint"] == "tcp://*:0"  # bound on the node's address
    assert engine["enable_prompt_tokens_details"] is True  # the cached-tokens header reads usage
    assert app._ingress_request_router is not None  # HAProxy asks the KV-aware router
    other = entry.init_kwargs["handles"][OTHER]._bound_deployment
    assert other._deployment_config.request_router_config.request_router_class.endswith("KvAwareRouter")
