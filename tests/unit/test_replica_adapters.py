"""The replica loads a LoRA adapter named by a request from the store, once, before the request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.errors import ClientError, ModelNotFoundError
from engine.store.manager import LocalModelManager
from service.serve_overrides.llm_server import TurnoutLLMServer
from tests.unit.test_adapters import BASE, _adapter, _base

ZUB = f"{BASE}:zub"


class _Engine:
    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []

    async def resolve_lora(self, config) -> None:
        await asyncio.sleep(0.01)
        self.loaded.append((config.model_id, config.local_path))


class _Probe(TurnoutLLMServer):
    """The engine-facing part of the replica only: no Ray, no vLLM, nothing to shut down."""

    def __del__(self) -> None:
        pass


def _server(enable_lora: bool = True, rank: int = 8, model_id: str = BASE) -> TurnoutLLMServer:
    server = object.__new__(_Probe)
    kwargs = {"enable_lora": True, "max_lora_rank": rank} if enable_lora else {}
    server._llm_config = SimpleNamespace(model_id=model_id, engine_kwargs=kwargs)
    server._adapters = {}
    server.engine = _Engine()
    return server


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalModelManager:
    manager = LocalModelManager(tmp_path / "store")
    await manager.initialize()
    await manager.register_model(_base(tmp_path / "tiny"), copy=True)
    manager.adapters.register(BASE, _adapter(tmp_path / "zub", rank=8), name="zub")
    monkeypatch.setenv("TURNOUT_HOME", str(manager.root))
    return manager


async def test_concurrent_first_requests_load_the_adapter_once(store: LocalModelManager) -> None:
    server = _server()
    await asyncio.gather(*(server._load_adapter(ZUB) for _ in range(5)))
    await server._load_adapter(ZUB)
    assert server.engine.loaded == [(ZUB, str(store.adapters.get(ZUB).path))]


@pytest.mark.parametrize(("server", "adapter", "error", "message"), [
    (dict(), f"{BASE}:absent", ModelNotFoundError, "does not exist"),
    (dict(model_id="local/llama/other"), ZUB, ModelNotFoundError, "is not for local/llama/other"),
    (dict(enable_lora=False), ZUB, ClientError, "serves no adapters: set its engine's max_loras"),
    (dict(rank=1), ZUB, ClientError, "has rank 8; local/llama/tiny serves ranks up to 1"),
])
async def test_an_adapter_the_replica_cannot_serve_is_a_client_error(
    store: LocalModelManager, server: dict, adapter: str, error: type, message: str,
) -> None:
    replica = _server(**server)
    with pytest.raises(error, match=message):
        await replica._load_adapter(adapter)
    assert replica.engine.loaded == []


async def test_a_failed_load_is_tried_again(store: LocalModelManager, tmp_path: Path) -> None:
    server = _server()
    with pytest.raises(ModelNotFoundError):
        await server._load_adapter(f"{BASE}:later")
    store.adapters.register(BASE, _adapter(tmp_path / "later", rank=8), name="later")
    await server._load_adapter(f"{BASE}:later")
    assert [i for i, _ in server.engine.loaded] == [f"{BASE}:later"]
