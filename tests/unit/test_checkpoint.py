import json

import pytest

from engine.errors import InvalidCheckpointError, InvalidModelNameError
from engine.protocol import (
    Capability,
    ModelFormat,
    ModelType,
    model_id,
    parse_model_id,
    validate_name,
)
from engine.store.checkpoint import inspect_checkpoint
from tests.checkpoints import write_checkpoint


def test_llama_chat_model_is_detected_with_capabilities(tmp_path):
    info = inspect_checkpoint(write_checkpoint(tmp_path / "m"), name="m")
    assert info.family is ModelType.LLAMA
    assert info.format is ModelFormat.SAFETENSORS
    assert info.context_length == 2048
    assert info.dtype == "bfloat16"
    assert {Capability.CHAT, Capability.COMPLETION, Capability.JSON_SCHEMA} <= set(info.capabilities)
    assert Capability.EMBEDDINGS not in info.capabilities
    assert Capability.TOOLS not in info.capabilities


def test_template_with_tools_gives_tools_capability(tmp_path):
    template = "{% if tools %}{{ tools | tojson }}{% endif %}{{ messages[0].content }}"
    info = inspect_checkpoint(write_checkpoint(tmp_path / "m", chat_template=template), name="m")
    assert Capability.TOOLS in info.capabilities


def test_base_model_without_template_has_no_chat(tmp_path):
    info = inspect_checkpoint(write_checkpoint(tmp_path / "m", chat_template=None), name="m")
    assert Capability.CHAT not in info.capabilities
    assert Capability.COMPLETION in info.capabilities


@pytest.mark.parametrize("arch", ["DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"])
def test_deepseek_architectures(tmp_path, arch):
    info = inspect_checkpoint(write_checkpoint(tmp_path / "m", arch), name="m")
    assert info.family is ModelType.DEEPSEEK


def test_r1_distill_is_deepseek_by_name_and_reasons(tmp_path):
    path = write_checkpoint(tmp_path / "m", "Qwen2ForCausalLM")
    (path / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"content": "<think>"}, {"content": "</think>"}]}))
    info = inspect_checkpoint(path, name="deepseek-r1-distill-qwen-1.5b")
    assert info.family is ModelType.DEEPSEEK
    assert Capability.REASONING in info.capabilities
    plain = inspect_checkpoint(path, name="qwen2-1.5b")
    assert plain.family is ModelType.CUSTOM
    assert Capability.REASONING not in plain.capabilities


def test_family_override(tmp_path):
    info = inspect_checkpoint(write_checkpoint(tmp_path / "m"), name="m", family=ModelType.CUSTOM)
    assert info.family is ModelType.CUSTOM


def test_embedding_model(tmp_path):
    path = write_checkpoint(tmp_path / "m", "BertModel", chat_template=None, context=512)
    (path / "sentence_bert_config.json").write_text('{"max_seq_length": 256}')
    info = inspect_checkpoint(path, name="m")
    assert info.family is ModelType.EMBEDDING
    assert info.capabilities == [Capability.EMBEDDINGS]
    assert info.context_length == 256


def test_directory_without_config_is_rejected(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(InvalidCheckpointError, match="no config.json"):
        inspect_checkpoint(tmp_path / "m", name="m")


def test_corrupt_config_and_missing_weights_are_rejected(tmp_path):
    path = write_checkpoint(tmp_path / "m")
    (path / "config.json").write_text("{not json")
    with pytest.raises(InvalidCheckpointError, match="not valid JSON"):
        inspect_checkpoint(path, name="m")
    path = write_checkpoint(tmp_path / "n")
    (path / "model.safetensors").unlink()
    with pytest.raises(InvalidCheckpointError, match="no weights"):
        inspect_checkpoint(path, name="n")


def test_missing_context_length_is_rejected(tmp_path):
    path = write_checkpoint(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    del config["max_position_embeddings"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidCheckpointError, match="context length"):
        inspect_checkpoint(path, name="m")


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "a\\b", "..", "x" * 101, "-lead", "sp ace"])
def test_unsafe_names_are_rejected(bad):
    with pytest.raises(InvalidModelNameError):
        validate_name(bad)


def test_model_ids_round_trip():
    assert model_id(ModelType.LLAMA, "SmolLM2-135M") == "local/llama/smollm2-135m"
    assert parse_model_id("local/deepseek/x") == (ModelType.DEEPSEEK, "x")
    for bad in ["llama/x", "local/llama/../x", "local/nope/x", "local/llama/x/y"]:
        with pytest.raises(InvalidModelNameError):
            parse_model_id(bad)
