"""``ModelSettings.source``: a missing model is fetched into the store before the graph is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.errors import ModelExistsError, ModelNotFoundError
from engine.protocol import Capability, ModelType
from engine.store.manager import LocalModelManager
from service.cli.serve import serve_config
from service.config import TurnoutConfig
from service.graph import model_record
from service.model_config import ModelSettings
from testkit.fakes import record
from tests.checkpoints import write_checkpoint

MODEL = "local/llama/tiny"
HUB = {"kind": "huggingface", "ref": "acme/Tiny-Llama", "revision": "v1"}


class FakeStore:
    """Records download calls; ``registered`` holds what get_model finds."""

    def __init__(self, registered: tuple[str, ...] = (), race: bool = False) -> None:
        self.registered = set(registered)
        self.race = race
        self.downloads: list[tuple] = []

    def get_model(self, model_id: str):
        if model_id not in self.registered:
            raise ModelNotFoundError(f"model {model_id!r} is not registered")
        return record(model_id, [Capability.CHAT], context=2048, size_bytes=16)

    async def download_model(self, ref, model_type, source, *, name, revision):
        self.downloads.append((ref, model_type, source, name, revision))
        self.registered.add(f"local/{model_type.value}/{name}")
        if self.race:
            raise ModelExistsError("another process registered it first")
        return self.get_model(f"local/{model_type.value}/{name}")


def test_a_registered_model_is_not_fetched_again():
    store = FakeStore(registered=(MODEL,))
    assert model_record(store, ModelSettings(id=MODEL, source=HUB)).id == MODEL
    assert store.downloads == []


def test_a_missing_model_without_a_source_still_fails():
    store = FakeStore()
    with pytest.raises(ModelNotFoundError):
        model_record(store, ModelSettings(id=MODEL))
    assert store.downloads == []


def test_a_missing_model_is_fetched_under_its_configured_family_and_name():
    store = FakeStore()
    assert model_record(store, ModelSettings(id=MODEL, source=HUB)).id == MODEL
    assert store.downloads == [("acme/Tiny-Llama", ModelType.LLAMA, "huggingface", "tiny", "v1")]


def test_a_concurrent_fetch_that_registered_first_wins():
    store = FakeStore(race=True)
    assert model_record(store, ModelSettings(id=MODEL, source=HUB)).id == MODEL


def test_a_directory_source_is_registered_in_a_fresh_store(tmp_path: Path):
    checkpoint = write_checkpoint(tmp_path / "volume" / "tiny-checkpoint")
    store = LocalModelManager(tmp_path / "store")
    model = ModelSettings(id=MODEL, source={"kind": "path", "ref": str(checkpoint)})
    first = model_record(store, model)
    assert (first.id, first.path, first.family) == (MODEL, checkpoint.resolve(), ModelType.LLAMA)
    assert store.get_model(MODEL) == first
    assert model_record(store, model) == first


@pytest.mark.parametrize("source", [{"kind": "generated", "ref": "x"}, {"ref": ""}, {"ref": "a", "token": "t"}])
def test_invalid_sources_are_rejected(source):
    with pytest.raises(ValidationError):
        ModelSettings(id=MODEL, source=source)


def test_the_source_survives_the_serve_config():
    config = TurnoutConfig(models=[{"id": MODEL, "source": HUB}])
    turnout = serve_config(config)["applications"][0]["args"]["turnout"]
    assert turnout["models"][0]["source"] == HUB
    assert TurnoutConfig(**turnout).models == config.models
    assert "source" not in serve_config(TurnoutConfig(models=[{"id": MODEL}]))["applications"][0]["args"]["turnout"]["models"][0]
