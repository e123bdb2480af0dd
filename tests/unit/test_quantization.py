"""Quantized checkpoints: detected on import, refused per platform, int8 at load (no engine here)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.errors import ConfigError, InvalidCheckpointError
from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings, Platform
from engine.quantize.schemes import detect
from engine.store.manager import LocalModelManager
from router.targets import local_target
from tests.checkpoints import write_checkpoint

AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
GPTQ_4 = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}
GPTQ_8 = GPTQ_4 | {"bits": 8}
FP8_BLOCK = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
FP8_TENSOR = {"quant_method": "fp8", "activation_scheme": "dynamic"}


def compressed(weights: dict, activations: dict | None, fmt: str) -> dict:
    """A compressed-tensors quantization_config as llm-compressor writes it."""
    group = {"targets": ["Linear"], "format": fmt, "weights": weights, "input_activations": activations,
             "output_activations": None}
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "config_groups": {"group_0": group}, "ignore": ["lm_head"]}


INT8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False}
TOKEN_INT8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}
W8A8 = compressed(INT8, TOKEN_INT8, "int-quantized")
W4A16 = compressed(INT8 | {"num_bits": 4, "strategy": "group", "group_size": 64}, None, "pack-quantized")
W8A16 = compressed(INT8 | {"strategy": "group", "group_size": 64}, None, "pack-quantized")
CT_FP8 = compressed(INT8 | {"type": "float"}, TOKEN_INT8 | {"type": "float"}, "float-quantized")

DETECTED = {  # config -> (scheme, method, weight bits, activation bits, group size)
    "awq": (AWQ, "w4a16", "awq", 4, 16, 128),
    "gptq-4bit": (GPTQ_4, "w4a16", "gptq", 4, 16, 128),
    "gptq-8bit": (GPTQ_8, "w8a16", "gptq", 8, 16, 128),
    "fp8-block": (FP8_BLOCK, "fp8", "fp8", 8, 8, None),
    "ct-w8a8": (W8A8, "w8a8", "compressed-tensors", 8, 8, None),
    "ct-w4a16": (W4A16, "w4a16", "compressed-tensors", 4, 16, 64),
    "ct-w8a16": (W8A16, "w8a16", "compressed-tensors", 8, 16, 64),
    "ct-fp8": (CT_FP8, "fp8", "compressed-tensors", 8, 8, None),
}


@pytest.fixture
def store(tmp_path: Path) -> LocalModelManager:
    manager = LocalModelManager(tmp_path / "store")
    asyncio.run(manager.initialize())
    return manager


def register(store: LocalModelManager, path: Path, qc: dict | None, **config):
    write_checkpoint(path, extra_config=({"quantization_config": qc} if qc else {}) | config)
    return asyncio.run(store.register_model(path, name=path.name))


@pytest.mark.parametrize("case", sorted(DETECTED))
def test_import_records_the_scheme_of_each_quantized_checkpoint(case, store, tmp_path):
    qc, scheme, method, wbits, abits, group = DETECTED[case]
    record = register(store, tmp_path / case, qc)
    q = record.quantization
    assert (q.scheme, q.method, q.weight_bits, q.activation_bits, q.group_size) == (scheme, method, wbits, abits, group)
    assert q.origin == "checkpoint"
    # the record as persisted, and as listed by a new manager
    assert LocalModelManager(store.root).get_model(record.id).quantization == q


def test_plain_checkpoints_have_no_quantization(store, tmp_path):
    assert register(store, tmp_path / "plain", None).quantization is None


@pytest.mark.parametrize("qc", [{"quant_method": "bitsandbytes", "load_in_4bit": True}, {"bits": 4}, "awq",
                                {"quant_method": "gptq"}])
def test_unknown_or_malformed_quantization_is_refused_at_import(qc, store, tmp_path):
    with pytest.raises(InvalidCheckpointError) as e:
        register(store, tmp_path / "odd", qc)
    assert e.value.status_code == 422
    assert store.list_models() == []


CPU_OK = ["awq", "gptq-4bit", "ct-w8a8", "ct-w4a16"]
CPU_REFUSED = {"gptq-8bit": "w8a16", "ct-w8a16": "w8a16", "fp8-block": "fp8", "ct-fp8": "fp8"}


@pytest.mark.parametrize("case", CPU_OK)
def test_schemes_vllm_cpu_has_kernels_for_start(case, store, tmp_path):
    record = register(store, tmp_path / case, DETECTED[case][0])
    kwargs = build_engine_args(record, platform=Platform.CPU).engine_kwargs
    assert kwargs["model"] == str(record.path)  # vLLM reads quantization_config itself
    assert "quantization" not in kwargs


@pytest.mark.parametrize("case", sorted(CPU_REFUSED))
def test_schemes_without_a_cpu_kernel_are_refused_at_start_naming_platform_and_scheme(case, store, tmp_path):
    record = register(store, tmp_path / case, DETECTED[case][0])
    with pytest.raises(ConfigError) as e:
        build_engine_args(record, platform=Platform.CPU)
    assert "cannot run on cpu" in e.value.message and CPU_REFUSED[case] in e.value.message
    assert e.value.status_code == 400


@pytest.mark.parametrize("case", sorted(DETECTED))
def test_every_known_scheme_starts_on_cuda(case, store, tmp_path):
    record = register(store, tmp_path / case, DETECTED[case][0])
    assert "quantization" not in build_engine_args(record, platform=Platform.CUDA).engine_kwargs


def test_a_quantized_checkpoint_cannot_be_quantized_again_at_load(store, tmp_path):
    record = register(store, tmp_path / "w8a8", W8A8)
    with pytest.raises(ConfigError, match="quantized already"):
        build_engine_args(record, EngineSettings(quantization="int8"), platform=Platform.CPU)


def test_fp8_at_load_goes_to_vllm_on_cuda_and_is_refused_on_cpu(store, tmp_path):
    record = register(store, tmp_path / "plain", None)
    kwargs = build_engine_args(record, EngineSettings(quantization="fp8"), platform=Platform.CUDA).engine_kwargs
    assert kwargs["quantization"] == "fp8"
    with pytest.raises(ConfigError, match="not available on cpu"):
        build_engine_args(record, EngineSettings(quantization="fp8"), platform=Platform.CPU)


def test_int8_at_load_is_refused_on_cuda_and_for_float32(store, tmp_path):
    record = register(store, tmp_path / "plain", None)
    with pytest.raises(ConfigError, match="not available on cuda"):
        build_engine_args(record, EngineSettings(quantization="int8"), platform=Platform.CUDA)
    with pytest.raises(ConfigError, match="bf16/fp16"):
        build_engine_args(record, EngineSettings(quantization="int8", dtype="float32"), platform=Platform.CPU)


def test_int8_at_load_of_a_moe_model_is_vllms_own(store, tmp_path):
    record = register(store, tmp_path / "moe", None, n_routed_experts=4)
    kwargs = build_engine_args(record, EngineSettings(quantization="int8"), platform=Platform.CPU, store_root=store.root).engine_kwargs
    assert kwargs["quantization"] == "int8_per_channel_weight_only"
    assert kwargs["model"] == str(record.path)


def test_int8_at_load_refuses_architectures_it_does_not_cover(store, tmp_path):
    path = write_checkpoint(tmp_path / "gpt2", "GPT2LMHeadModel")
    record = asyncio.run(store.register_model(path))
    with pytest.raises(ConfigError, match="turnout models quantize"):
        build_engine_args(record, EngineSettings(quantization="int8"), platform=Platform.CPU, store_root=store.root)


def test_quantized_checkpoints_estimate_parameters_from_their_bit_width(store, tmp_path):
    plain = register(store, tmp_path / "plain", None).model_copy(update={"size_bytes": 2_000_000_000})
    four = register(store, tmp_path / "w4", W4A16).model_copy(update={"size_bytes": 500_000_000})
    assert local_target(plain).parameters == local_target(four).parameters == 1_000_000_000
    assert local_target(four).quantization.scheme == "w4a16"


def test_detect_reads_compression_config_too():
    assert detect({"compression_config": W8A8}).scheme == "w8a8"
    assert detect({"architectures": ["LlamaForCausalLM"]}) is None


def test_models_list_shows_the_scheme(store, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from service.cli.app import app

    register(store, tmp_path / "w4", GPTQ_4)
    monkeypatch.setenv("TURNOUT_HOME", str(store.root))
    table = CliRunner().invoke(app, ["models", "list"])
    assert table.exit_code == 0, table.output
    assert "w4a16 (gptq)" in table.output
    listed = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    assert listed[0]["quantization"]["scheme"] == "w4a16"
