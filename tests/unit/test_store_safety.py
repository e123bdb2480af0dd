"""Model ids, import names and imported files cannot escape the store; remote code stays off
unless a model's own engine settings turn it on."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError, InvalidCheckpointError, InvalidModelNameError
from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings, Platform
from engine.protocol import parse_model_id, validate_name
from engine.store.manager import LocalModelManager
from service.config import load_config
from tests.checkpoints import write_checkpoint
from tests.unit.test_engine_config import make_record

BAD_NAMES = ["..", "../evil", "a/b", "/etc/passwd", "a\\b", "a\x00b", "x" * 101, "", ".hidden", "-flag", "a b"]
BAD_IDS = [
    "local/llama/../../etc", "local/llama/a/b", "/etc/passwd", "local/../x", "local/llama/..",
    "local/llama/a\x00b", "local/llama/" + "x" * 101, "local/llama\\x/y", "cloud/../../x",
]


@pytest.fixture
async def store(tmp_path):
    manager = LocalModelManager(tmp_path / "store")
    await manager.initialize()
    return manager


def files_under(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_unsafe_names_are_rejected(name):
    with pytest.raises(InvalidModelNameError):
        validate_name(name)


@pytest.mark.parametrize("value", BAD_IDS, ids=repr)
def test_unsafe_ids_are_rejected(value, tmp_path):
    with pytest.raises(InvalidModelNameError):
        parse_model_id(value)
    config = tmp_path / "turnout.yaml"
    config.write_text(f"models: [{{id: {value!r}}}]\n".replace("\x00", "\\0"))
    with pytest.raises(ConfigError):
        load_config(config)


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n], ids=repr)  # "" means: derive one
async def test_imports_under_unsafe_names_write_nothing(store, tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    before = files_under(tmp_path)
    ckpt = write_checkpoint(tmp_path / "ckpt")
    before |= files_under(tmp_path)
    with pytest.raises(InvalidModelNameError):
        await store.register_model(ckpt, name=name, copy=True)
    with pytest.raises(InvalidModelNameError):
        await store.import_gguf(tmp_path / "model.gguf", name=name)
    with pytest.raises(InvalidModelNameError):
        await store.import_ollama("smollm2:135m", name=name, ollama_home=tmp_path / "ollama")
    assert files_under(tmp_path) == before
    assert store.list_models() == []


@pytest.mark.parametrize("reference", ["../../etc/passwd:latest", "library/../x", "a/b/c/d", "x:../../y"])
async def test_ollama_references_cannot_walk_out(store, tmp_path, reference):
    with pytest.raises(InvalidModelNameError):
        await store.import_ollama(reference, ollama_home=tmp_path / "ollama")


async def test_a_link_to_a_file_outside_is_copied_as_a_file(store, tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    real = tmp_path / "blobs" / "tokenizer-blob"
    real.parent.mkdir()
    real.write_bytes((ckpt / "tokenizer.json").read_bytes())
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "tokenizer.json").symlink_to(real)
    record = await store.register_model(ckpt, name="linked", copy=True)
    copied = record.path / "tokenizer.json"
    assert copied.is_file() and not copied.is_symlink()
    assert not any(p.is_symlink() for p in record.path.rglob("*"))


@pytest.mark.parametrize("target", ["dir", "dangling"])
async def test_a_link_to_a_directory_or_nothing_is_refused(store, tmp_path, target):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    (ckpt / "escape").symlink_to(tmp_path if target == "dir" else tmp_path / "missing")
    with pytest.raises(InvalidCheckpointError, match="escape"):
        await store.register_model(ckpt, name="linked", copy=True)
    assert store.list_models() == []
    assert list(store.staging_dir.iterdir()) == []
    assert not (store.models_dir / "llama" / "linked").exists()


def test_remote_code_is_off_by_default(tmp_path):
    launch = build_engine_args(make_record(tmp_path / "m"), platform=Platform.CPU)
    assert launch.engine_kwargs["trust_remote_code"] is False
    assert EngineSettings().trust_remote_code is False


def test_only_the_models_own_settings_turn_remote_code_on(tmp_path):
    record = make_record(tmp_path / "m")
    launch = build_engine_args(record, EngineSettings(trust_remote_code=True), platform=Platform.CPU)
    assert launch.engine_kwargs["trust_remote_code"] is True
    with pytest.raises(ConfigError, match="trust_remote_code"):
        build_engine_args(record, EngineSettings(engine_args={"trust_remote_code": True}), platform=Platform.CPU)


def test_remote_code_is_per_model(tmp_path):
    config = tmp_path / "turnout.yaml"
    config.write_text(
        "models:\n"
        "  - {id: local/llama/a, engine: {trust_remote_code: true}}\n"
        "  - {id: local/llama/b}\n"
    )
    models = {m.id: m.engine.trust_remote_code for m in load_config(config).models}
    assert models == {"local/llama/a": True, "local/llama/b": False}
