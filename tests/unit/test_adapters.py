"""LoRA adapters in the store: ids, the check against the base, registration and removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import (
    InvalidCheckpointError,
    InvalidModelNameError,
    ModelExistsError,
    ModelNotFoundError,
)
from engine.lora.adapter import (
    adapter_id,
    inspect_adapter,
    is_adapter_id,
    parse_adapter_id,
)
from engine.store.manager import LocalModelManager
from tests.checkpoints import write_checkpoint

BASE = "local/llama/tiny"
HIDDEN, KV = 8, 4  # q/o: 8x8, k/v: 4x8


def _base(path: Path) -> Path:
    write_checkpoint(path)
    save_file({
        "model.layers.0.self_attn.q_proj.weight": torch.zeros(HIDDEN, HIDDEN),
        "model.layers.0.self_attn.k_proj.weight": torch.zeros(KV, HIDDEN),
        "model.layers.0.self_attn.v_proj.weight": torch.zeros(KV, HIDDEN),
        "model.layers.0.self_attn.o_proj.weight": torch.zeros(HIDDEN, HIDDEN),
    }, str(path / "model.safetensors"))
    return path


def _adapter(path: Path, rank: int = 2, modules: dict[str, int] | None = None, config: dict | None = None) -> Path:
    """A PEFT LoRA directory: module -> out features (in features are HIDDEN)."""
    path.mkdir(parents=True, exist_ok=True)
    modules = modules if modules is not None else {"q_proj": HIDDEN, "v_proj": KV}
    tensors = {}
    for module, out in modules.items():
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{prefix}.lora_A.weight"] = torch.zeros(rank, HIDDEN)
        tensors[f"{prefix}.lora_B.weight"] = torch.zeros(out, rank)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": sorted(modules),
        "base_model_name_or_path": "tiny", **(config or {}),
    }))
    return path


@pytest.fixture
async def store(tmp_path: Path) -> LocalModelManager:
    manager = LocalModelManager(tmp_path / "store")
    await manager.initialize()
    await manager.register_model(_base(tmp_path / "tiny"), copy=True)
    return manager


def test_adapter_ids_are_the_base_id_and_a_name() -> None:
    assert adapter_id(BASE, "Zubrowka") == f"{BASE}:zubrowka"
    assert parse_adapter_id(f"{BASE}:zubrowka") == (BASE, "zubrowka")
    assert is_adapter_id(f"{BASE}:zubrowka") and not is_adapter_id(BASE) and not is_adapter_id("cloud/acme/a:b")
    for bad in (f"{BASE}:", f"{BASE}:../x", "local/nofamily/x:y", ":name"):
        with pytest.raises(InvalidModelNameError):
            parse_adapter_id(bad)


async def test_an_adapter_is_checked_against_its_base_and_registered(store: LocalModelManager, tmp_path: Path) -> None:
    record = store.adapters.register(BASE, _adapter(tmp_path / "zub"), name="zubrowka")
    assert (record.id, record.base, record.rank, record.alpha) == (f"{BASE}:zubrowka", BASE, 2, 4.0)
    assert record.target_modules == ["q_proj", "v_proj"]
    assert record.owned and store.root in record.path.parents and (record.path / "adapter_config.json").is_file()
    assert [a.id for a in store.adapters.list(base=BASE)] == [record.id]
    assert store.adapters.get(record.id) == record
    with pytest.raises(ModelExistsError):
        store.adapters.register(BASE, tmp_path / "zub", name="zubrowka")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"modules": {"q_proj": KV}}, "does not fit"),  # B's rows are not q_proj's outputs
    ({"modules": {"gate_proj": HIDDEN}}, "does not have"),  # no such module in the base
    ({"config": {"peft_type": "PREFIX_TUNING"}}, "only LORA"),
    ({"config": {"modules_to_save": ["lm_head"]}}, "modules_to_save"),
    ({"modules": {}}, "no LoRA matrices"),
])
async def test_an_adapter_that_does_not_fit_its_base_is_refused(
    store: LocalModelManager, tmp_path: Path, kwargs: dict, message: str,
) -> None:
    with pytest.raises(InvalidCheckpointError, match=message):
        store.adapters.register(BASE, _adapter(tmp_path / "bad", **kwargs), name="bad")
    assert store.adapters.list() == []
    assert not list(store.root.glob("adapters/**/bad"))


async def test_a_directory_without_peft_files_is_refused(store: LocalModelManager, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidCheckpointError, match="adapter_config.json"):
        store.adapters.register(BASE, tmp_path / "empty", name="x")
    base = store.get_model(BASE)
    with pytest.raises(InvalidCheckpointError, match="adapter_model.safetensors"):
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
        inspect_adapter(tmp_path / "cfg", base)


async def test_an_adapter_needs_a_registered_base(store: LocalModelManager, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        store.adapters.register("local/llama/absent", _adapter(tmp_path / "zub"), name="zub")


async def test_a_failed_build_registers_nothing(store: LocalModelManager) -> None:
    from engine.lora.adapter import AdapterSource

    def build(out: Path) -> dict[str, str]:
        (out / "partial").write_text("x")
        raise KeyboardInterrupt  # as Ctrl-C during training

    with pytest.raises(KeyboardInterrupt):
        store.adapters.register_built(BASE, "halfway", build, AdapterSource.FINETUNED, "data.jsonl")
    assert store.adapters.list() == []
    assert list(store.staging_dir.iterdir()) == []


async def test_removing_adapters_and_their_base(store: LocalModelManager, tmp_path: Path) -> None:
    record = store.adapters.register(BASE, _adapter(tmp_path / "zub"), name="zub")
    linked = store.adapters.register(BASE, _adapter(tmp_path / "linked"), name="linked", copy=False)
    with pytest.raises(ModelExistsError, match="remove them first"):
        await store.remove_model(BASE)
    store.adapters.remove(record.id)
    store.adapters.remove(linked.id)
    assert not record.path.exists()
    assert linked.path.is_dir()  # registered in place: not the store's to delete
    with pytest.raises(ModelNotFoundError):
        store.adapters.remove(record.id)
    await store.remove_model(BASE)


async def test_configured_adapters_are_registered_at_start_once(store: LocalModelManager, tmp_path: Path) -> None:
    from service.graph import register_adapters
    from service.model_config import ModelSettings

    model = ModelSettings(id=BASE, engine={"max_loras": 1},
                          adapters=[{"name": "zub", "kind": "path", "ref": str(_adapter(tmp_path / "zub"))}])
    register_adapters(store, model)
    register_adapters(store, model)  # already there: left as it is
    assert [a.id for a in store.adapters.list()] == [f"{BASE}:zub"]


def test_configured_adapters_need_an_engine_that_serves_them() -> None:
    from pydantic import ValidationError

    from service.model_config import ModelSettings

    with pytest.raises(ValidationError, match="max_loras is 0"):
        ModelSettings(id=BASE, adapters=[{"name": "zub", "ref": "org/zub"}])
    with pytest.raises(ValidationError, match="invalid model name"):
        ModelSettings(id=BASE, engine={"max_loras": 1}, adapters=[{"name": "../zub", "ref": "org/zub"}])
