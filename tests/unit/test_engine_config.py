"""engine.launch.plan: settings -> vLLM engine arguments, per platform (no engine is started)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.errors import ConfigError
from engine.launch.plan import (
    CPU_EMBEDDING_KV_CACHE_BYTES,
    CPU_KV_CACHE_BYTES,
    build_engine_args,
)
from engine.launch.settings import EngineSettings, Platform, detect_platform
from engine.protocol import Capability, ModelFormat, ModelRecord, ModelType, SourceKind

CHAT = [Capability.COMPLETION, Capability.JSON_SCHEMA, Capability.CHAT]
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "kv_lora_rank": 512,
    "qk_rope_head_dim": 64,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
}


def make_record(
    path: Path,
    family: ModelType = ModelType.LLAMA,
    *,
    config: dict[str, Any] | None = None,
    capabilities: list[Capability] | None = None,
    tokens: tuple[str, ...] = (),
) -> ModelRecord:
    """A record whose checkpoint directory holds only config.json and tokenizer.json."""
    path.mkdir(parents=True, exist_ok=True)
    config = config or {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    (path / "config.json").write_text(json.dumps(config))
    vocab = {token: i for i, token in enumerate(tokens)}
    (path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    return ModelRecord(
        id=f"local/{family.value}/{path.name}",
        name=path.name,
        family=family,
        format=ModelFormat.SAFETENSORS,
        path=path,
        source=SourceKind.PATH,
        source_ref=str(path),
        size_bytes=0,
        architecture=config["architectures"][0],
        context_length=4096,
        dtype="bfloat16",
        capabilities=capabilities if capabilities is not None else CHAT,
    )


@pytest.fixture
def llama(tmp_path: Path) -> ModelRecord:
    return make_record(tmp_path / "smollm2")


def test_cpu_defaults_run_eager_with_an_explicit_kv_cache(llama: ModelRecord) -> None:
    launch = build_engine_args(llama, platform=Platform.CPU)
    kwargs = launch.engine_kwargs
    assert kwargs["model"] == kwargs["tokenizer"] == str(llama.path)
    assert kwargs["served_model_name"] == llama.id
    assert kwargs["enforce_eager"] is True
    assert kwargs["kv_cache_memory_bytes"] == CPU_KV_CACHE_BYTES == 512 * 1024 * 1024
    assert "gpu_memory_utilization" not in kwargs
    assert "runner" not in kwargs and "reasoning_parser" not in kwargs
    assert kwargs["structured_outputs_config"] == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    assert launch.env == {"TURNOUT_CPU_KERNELS": "portable"} and launch.reasoning_parser is None


def test_cuda_defaults_use_cuda_graphs_and_a_memory_share(llama: ModelRecord) -> None:
    settings = EngineSettings(tensor_parallel_size=2)
    kwargs = build_engine_args(llama, settings, platform=Platform.CUDA).engine_kwargs
    assert kwargs["enforce_eager"] is False
    assert kwargs["gpu_memory_utilization"] == 0.90
    assert kwargs["tensor_parallel_size"] == 2
    assert "kv_cache_memory_bytes" not in kwargs


def test_cuda_honours_explicit_eager_and_kv_cache(llama: ModelRecord) -> None:
    settings = EngineSettings(enforce_eager=True, kv_cache_memory_bytes=2**30)
    kwargs = build_engine_args(llama, settings, platform=Platform.CUDA).engine_kwargs
    assert kwargs["enforce_eager"] is True
    assert kwargs["kv_cache_memory_bytes"] == 2**30


def test_optional_settings_are_passed_only_when_set(llama: ModelRecord) -> None:
    settings = EngineSettings(max_model_len=2048, max_num_seqs=8, seed=3, dtype="bfloat16")
    kwargs = build_engine_args(llama, settings, platform=Platform.CPU).engine_kwargs
    assert (kwargs["max_model_len"], kwargs["max_num_seqs"], kwargs["seed"]) == (2048, 8, 3)
    assert kwargs["dtype"] == "bfloat16"
    assert "enable_prefix_caching" not in kwargs


def test_adapters_are_served_when_max_loras_is_set(llama: ModelRecord, tmp_path: Path) -> None:
    plain = build_engine_args(llama, EngineSettings(), platform=Platform.CPU).engine_kwargs
    assert "enable_lora" not in plain and "max_loras" not in plain
    kwargs = build_engine_args(llama, EngineSettings(max_loras=3, max_lora_rank=8), platform=Platform.CPU).engine_kwargs
    assert (kwargs["enable_lora"], kwargs["max_loras"], kwargs["max_lora_rank"]) == (True, 3, 8)
    with pytest.raises(ConfigError, match="max_lora_rank 12 is not one of vLLM's"):
        build_engine_args(llama, EngineSettings(max_loras=1, max_lora_rank=12), platform=Platform.CPU)
    embedding = make_record(tmp_path / "minilm", ModelType.EMBEDDING, config={"architectures": ["BertModel"],
                            "model_type": "bert"}, capabilities=[Capability.EMBEDDINGS])
    with pytest.raises(ConfigError, match="adapters are for generative models"):
        build_engine_args(embedding, EngineSettings(max_loras=1), platform=Platform.CPU)


def test_embedding_models_use_the_pooling_runner(tmp_path: Path) -> None:
    config = {"architectures": ["BertModel"], "model_type": "bert"}
    caps = [Capability.EMBEDDINGS]
    record = make_record(tmp_path / "minilm", ModelType.EMBEDDING, config=config, capabilities=caps)
    kwargs = build_engine_args(record, platform=Platform.CPU).engine_kwargs
    assert kwargs["runner"] == "pooling"
    assert kwargs["kv_cache_memory_bytes"] == CPU_EMBEDDING_KV_CACHE_BYTES
    assert "structured_outputs_config" not in kwargs


def test_compiled_mode_is_rejected_on_cpu(llama: ModelRecord) -> None:
    with pytest.raises(ConfigError, match="enforce_eager") as raised:
        build_engine_args(llama, EngineSettings(enforce_eager=False), platform=Platform.CPU)
    assert raised.value.param == "enforce_eager"


def test_gpu_memory_share_is_rejected_on_cpu(llama: ModelRecord) -> None:
    settings = EngineSettings(gpu_memory_utilization=0.5)
    with pytest.raises(ConfigError, match="kv_cache_memory_bytes"):
        build_engine_args(llama, settings, platform=Platform.CPU)


def test_max_model_len_beyond_the_model_context_is_rejected(llama: ModelRecord) -> None:
    with pytest.raises(ConfigError, match="max_model_len"):
        build_engine_args(llama, EngineSettings(max_model_len=8192), platform=Platform.CPU)


def test_deepseek_with_the_supported_mla_size_is_accepted(tmp_path: Path) -> None:
    record = make_record(tmp_path / "ds", ModelType.DEEPSEEK, config=DEEPSEEK_V3)
    assert build_engine_args(record, platform=Platform.CPU).engine_kwargs["enforce_eager"]


def test_deepseek_mla_size_other_than_576_is_rejected_on_cpu(tmp_path: Path) -> None:
    config = DEEPSEEK_V3 | {"kv_lora_rank": 256}
    record = make_record(tmp_path / "ds", ModelType.DEEPSEEK, config=config)
    with pytest.raises(ConfigError, match="576") as raised:
        build_engine_args(record, platform=Platform.CPU)
    assert "kv_lora_rank" in raised.value.message
    assert build_engine_args(record, platform=Platform.CUDA)  # the GPU kernels handle it


def test_deepseek_v3_config_without_routing_keys_is_rejected(tmp_path: Path) -> None:
    config = {k: v for k, v in DEEPSEEK_V3.items() if k not in ("topk_method", "scoring_func")}
    record = make_record(tmp_path / "ds", ModelType.DEEPSEEK, config=config)
    with pytest.raises(ConfigError, match="noaux_tc"):
        build_engine_args(record, platform=Platform.CPU)


@pytest.mark.parametrize("missing", ["n_group", "topk_group"])
def test_deepseek_moe_without_group_numbers_is_rejected(tmp_path: Path, missing: str) -> None:
    config = DEEPSEEK_V3 | {"n_routed_experts": 8, "n_group": 1, "topk_group": 1, missing: None}
    record = make_record(tmp_path / "ds", ModelType.DEEPSEEK, config=config)
    with pytest.raises(ConfigError, match="n_group and topk_group"):
        build_engine_args(record, platform=Platform.CPU)
    fixed = make_record(tmp_path / "ok", ModelType.DEEPSEEK, config=config | {missing: 1})
    assert build_engine_args(fixed, platform=Platform.CPU)


def test_r1_distills_are_not_checked_for_mla(tmp_path: Path) -> None:
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "kv_lora_rank": 1}
    record = make_record(tmp_path / "r1-distill", ModelType.DEEPSEEK, config=config)
    assert build_engine_args(record, platform=Platform.CPU)


def test_reasoning_models_get_the_deepseek_r1_parser(tmp_path: Path) -> None:
    record = make_record(
        tmp_path / "r1",
        ModelType.DEEPSEEK,
        config=DEEPSEEK_V3,
        capabilities=[*CHAT, Capability.REASONING],
        tokens=["<think>", "</think>"],
    )
    launch = build_engine_args(record, platform=Platform.CPU)
    assert launch.reasoning_parser == launch.engine_kwargs["reasoning_parser"] == "deepseek_r1"
    off = build_engine_args(record, EngineSettings(reasoning=False), platform=Platform.CPU)
    assert off.reasoning_parser is None and "reasoning_parser" not in off.engine_kwargs


def test_reasoning_needs_think_tokens(llama: ModelRecord) -> None:
    with pytest.raises(ConfigError, match="<think>") as raised:
        build_engine_args(llama, EngineSettings(reasoning=True), platform=Platform.CPU)
    assert raised.value.param == "reasoning"


def test_engine_args_pass_through_and_merge_nested_configs(llama: ModelRecord) -> None:
    extra = {"max_num_batched_tokens": 4096, "structured_outputs_config": {"backend": "guidance"}}
    kwargs = build_engine_args(
        llama, EngineSettings(engine_args=extra), platform=Platform.CPU
    ).engine_kwargs
    assert kwargs["max_num_batched_tokens"] == 4096
    assert kwargs["structured_outputs_config"] == {
        "backend": "guidance",
        "disable_any_whitespace": True,
    }


def test_unknown_engine_args_are_rejected_by_name(llama: ModelRecord) -> None:
    settings = EngineSettings(engine_args={"max_num_seqz": 4, "guided_json": {}})
    with pytest.raises(ConfigError, match="guided_json, max_num_seqz") as raised:
        build_engine_args(llama, settings, platform=Platform.CPU)
    assert raised.value.param == "engine_args"


@pytest.mark.parametrize("key", ["enforce_eager", "model", "served_model_name", "runner"])
def test_engine_args_cannot_override_typed_settings(llama: ModelRecord, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_engine_args(llama, EngineSettings(engine_args={key: False}), platform=Platform.CPU)


def test_cpu_threads_bind_becomes_the_engine_env(llama: ModelRecord) -> None:
    launch = build_engine_args(llama, EngineSettings(cpu_threads_bind="1"), platform=Platform.CPU)
    assert launch.env == {"VLLM_CPU_OMP_THREADS_BIND": "1", "TURNOUT_CPU_KERNELS": "portable"}


def test_the_cpu_kernel_policy_goes_to_cpu_engines_only(llama: ModelRecord) -> None:
    settings = EngineSettings(cpu_kernels="vllm")
    assert build_engine_args(llama, settings, platform=Platform.CPU).env == {"TURNOUT_CPU_KERNELS": "vllm"}
    assert build_engine_args(llama, settings, platform=Platform.CUDA).env == {}
    with pytest.raises(ValidationError):
        EngineSettings(cpu_kernels="amx-please")


def test_cpu_threads_bind_needs_one_core_list_per_rank(llama: ModelRecord) -> None:
    settings = EngineSettings(cpu_threads_bind="0-1|2-3", tensor_parallel_size=2)
    assert build_engine_args(llama, settings, platform=Platform.CPU).env
    with pytest.raises(ConfigError, match="one per rank"):
        build_engine_args(llama, EngineSettings(cpu_threads_bind="0|1"), platform=Platform.CPU)
    with pytest.raises(ConfigError, match="CPU only"):
        build_engine_args(llama, EngineSettings(cpu_threads_bind="0"), platform=Platform.CUDA)


@pytest.mark.parametrize(
    "bad", [{"cpu_threads_bind": "cores 0"}, {"kv_cache_memory_bytes": 10}, {"typo": 1}]
)
def test_settings_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EngineSettings(**bad)


def test_platform_override_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_PLATFORM", "CUDA")
    assert detect_platform() is Platform.CUDA
    monkeypatch.setenv("TURNOUT_PLATFORM", "tpu")
    with pytest.raises(ConfigError, match="TURNOUT_PLATFORM"):
        detect_platform()


def test_importing_the_config_does_not_import_vllm() -> None:
    code = "import sys, engine.launch.plan; sys.exit('vllm' in sys.modules or 'torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
