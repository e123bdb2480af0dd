import json
import multiprocessing
import os

import pytest

from engine.errors import (
    DownloadError,
    InvalidCheckpointError,
    InvalidModelNameError,
    ModelExistsError,
    ModelNotFoundError,
    StoreError,
)
from engine.protocol import ModelType, SourceKind
from engine.store.manager import LocalModelManager
from engine.store.registry import Registry
from tests.checkpoints import write_checkpoint


@pytest.fixture
async def store(tmp_path):
    manager = LocalModelManager(tmp_path / "store")
    await manager.initialize()
    return manager


async def test_register_path_in_place_and_survive_restart(store, tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpts" / "My-Llama")
    record = await store.register_model(ckpt)
    assert record.id == "local/llama/my-llama"
    assert record.path == ckpt and not record.owned
    again = LocalModelManager(store.root)
    await again.initialize()
    assert again.get_model("local/llama/my-llama") == record
    assert [r.id for r in again.list_models(ModelType.LLAMA)] == ["local/llama/my-llama"]
    assert again.list_models(ModelType.DEEPSEEK) == []


async def test_copy_moves_a_complete_checkpoint_into_the_store(store, tmp_path):
    ckpt = write_checkpoint(tmp_path / "src")
    record = await store.register_model(ckpt, name="copied", copy=True)
    assert record.owned
    assert record.path == store.models_dir / "llama" / "copied"
    assert (record.path / "config.json").is_file()
    assert list(store.staging_dir.iterdir()) == []
    await store.remove_model(record.id)
    assert not record.path.exists()
    assert ckpt.exists()


async def test_remove_never_deletes_files_the_store_does_not_own(store, tmp_path):
    ckpt = write_checkpoint(tmp_path / "mine")
    record = await store.register_model(ckpt)
    await store.remove_model(record.id)
    assert (ckpt / "config.json").is_file()
    with pytest.raises(ModelNotFoundError):
        store.get_model(record.id)


async def test_duplicate_id_is_rejected(store, tmp_path):
    await store.register_model(write_checkpoint(tmp_path / "a"), name="x")
    with pytest.raises(ModelExistsError):
        await store.register_model(write_checkpoint(tmp_path / "b"), name="x")
    with pytest.raises(ModelExistsError):
        await store.register_model(write_checkpoint(tmp_path / "c"), name="x", copy=True)


async def test_unknown_and_malformed_ids(store):
    with pytest.raises(ModelNotFoundError):
        store.get_model("local/llama/nope")
    with pytest.raises(InvalidModelNameError):
        store.get_model("local/llama/../../etc")
    with pytest.raises(ModelNotFoundError):
        await store.remove_model("local/llama/nope")


async def test_bad_names_and_bad_directories_register_nothing(store, tmp_path):
    with pytest.raises(InvalidModelNameError):
        await store.register_model(write_checkpoint(tmp_path / "a"), name="../evil")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidCheckpointError, match="config.json"):
        await store.register_model(empty)
    with pytest.raises(InvalidCheckpointError):
        await store.register_model(empty, copy=True)
    assert store.list_models() == []


async def test_failed_build_leaves_nothing_behind(store):
    def build(out):
        write_checkpoint(out)
        raise KeyboardInterrupt  # interrupted half-way

    with pytest.raises(KeyboardInterrupt):
        await store.import_built(build, name="half", family=None, source=SourceKind.GENERATED, source_ref="t")
    assert store.list_models() == []
    assert list(store.staging_dir.iterdir()) == []
    assert not (store.models_dir / "llama" / "half").exists()


async def test_abandoned_staging_of_a_dead_process_is_cleared(tmp_path):
    root = tmp_path / "store"
    (root / "staging" / "999999999-abc").mkdir(parents=True)
    (root / "staging" / f"{os.getpid()}-live").mkdir()
    manager = LocalModelManager(root)
    await manager.initialize()
    assert [p.name for p in manager.staging_dir.iterdir()] == [f"{os.getpid()}-live"]


async def test_crash_while_writing_registry_keeps_old_registry(store, tmp_path, monkeypatch):
    await store.register_model(write_checkpoint(tmp_path / "a"), name="kept")
    before = store.registry.path.read_text()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", explode)
    with pytest.raises(OSError):
        await store.register_model(write_checkpoint(tmp_path / "b"), name="lost")
    monkeypatch.undo()
    assert store.registry.path.read_text() == before
    assert [r.name for r in store.list_models()] == ["kept"]
    assert not list(store.root.glob(".registry-*"))


def test_corrupt_registry_is_a_clear_error(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text("{garbage")
    with pytest.raises(StoreError, match="unreadable"):
        Registry(path).load()


def _register_many(root, src, prefix, count):
    import asyncio

    async def go():
        manager = LocalModelManager(root)
        await manager.initialize()
        for i in range(count):
            await manager.register_model(src, name=f"{prefix}-{i}")

    asyncio.run(go())


def test_two_processes_registering_at_once_lose_nothing(tmp_path):
    src = write_checkpoint(tmp_path / "src")
    root = tmp_path / "store"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(root, src, p, 15)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = {m["name"] for m in json.loads((root / "registry.json").read_text())["models"]}
    assert names == {f"{p}-{i}" for p in ("a", "b") for i in range(15)}


async def test_huggingface_unreachable_and_not_cached(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(DownloadError, match="not in the local Hugging Face cache"):
        await store.download_model("HuggingFaceTB/SmolLM2-135M-Instruct", source="huggingface")
    assert store.list_models() == []


async def test_huggingface_reuses_the_users_cache(store, tmp_path, monkeypatch):
    """A model already in the HF cache is registered in place, offline, at its commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    write_checkpoint(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf"))
    record = await store.download_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert record.id == "local/llama/smollm2-135m-instruct"
    assert record.revision == commit
    assert record.source is SourceKind.HUGGINGFACE and not record.owned
    assert record.path == repo / "snapshots" / commit


async def test_invalid_hub_repo_id(store):
    with pytest.raises(InvalidModelNameError):
        await store.download_model("org/../x", name="../x")
