"""engine.quantize.int8: the W8A8 copy Turnout writes for int8 at load on the CPU (tiny random Llama)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.errors import ConfigError
from engine.quantize.int8 import int8_checkpoint, quantize_tensor
from engine.quantize.schemes import detect


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, torch_dtype="bfloat16")
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    (path / "tokenizer.json").write_text("{}")
    return path


def test_per_channel_round_to_nearest_is_within_half_a_step():
    weight = torch.randn(32, 64, dtype=torch.bfloat16) * torch.linspace(0.01, 3, 32).unsqueeze(1).to(torch.bfloat16)
    q, scale = quantize_tensor(weight)
    assert q.dtype == torch.int8 and scale.shape == (32, 1) and scale.dtype == torch.bfloat16
    assert bool((q.abs().amax(dim=1) >= 126).all())  # each row's largest weight uses the whole range
    error = (q.float() * scale.float() - weight.float()).abs()
    assert bool((error <= scale.float() * 0.6).all())  # half a step, plus the clamp at 127


def test_the_copy_has_int8_linear_weights_and_everything_else_unchanged(tiny_llama, tmp_path):
    from safetensors.torch import load_file

    out = int8_checkpoint(tiny_llama, tmp_path / "cache", model_id="local/llama/tiny")
    source, copy = load_file(tiny_llama / "model.safetensors"), load_file(out / "model.safetensors")
    linear = [n for n in source if n.endswith("_proj.weight")]
    assert len(linear) == 2 * 7
    for name in linear:
        assert copy[name].dtype == torch.int8
        assert torch.allclose(copy[name].float() * copy[f"{name}_scale"].float(), source[name].float(),
                              atol=float(copy[f"{name}_scale"].float().max()))
    for name in set(source) - set(linear):
        assert torch.equal(copy[name], source[name])
    config = json.loads((out / "config.json").read_text())
    assert detect(config).scheme == "w8a8"
    assert (out / "tokenizer.json").is_file()
    assert not list((tmp_path / "cache").glob(".*"))  # no staging left behind


def test_the_copy_is_made_once_per_source_version(tiny_llama, tmp_path):
    cache = tmp_path / "cache"
    first = int8_checkpoint(tiny_llama, cache, model_id="m")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert int8_checkpoint(tiny_llama, cache, model_id="m") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    (tiny_llama / "generation_config.json").write_text("{}")  # the source changed: a new copy
    assert int8_checkpoint(tiny_llama, cache, model_id="m") != first


def test_other_architectures_are_refused(tmp_path):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ConfigError, match="GPT2LMHeadModel"):
        int8_checkpoint(tmp_path / "gpt2", tmp_path / "cache", model_id="local/custom/gpt2")
