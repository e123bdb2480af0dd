"""``service.graph.llm_config``: one model's ``ray.serve.llm`` configuration (no engine started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import CPU_EMBEDDING_KV_CACHE_BYTES, CPU_KV_CACHE_BYTES, EngineSettings, Platform
from engine.errors import ConfigError
from engine.protocol import Capability
from service.config import AutoscalingSettings, LimitsSettings, ModelSettings
from service.graph import llm_config
from tests.checkpoints import write_checkpoint
from tests.fakes import record

MODEL = "local/llama/tiny"
EMBEDDER = "local/embedding/tiny"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "tiny")


def test_cpu_engine_is_eager_with_an_explicit_kv_cache(checkpoint):
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=checkpoint)
    config = llm_config(ModelSettings(id=MODEL, replicas=3), rec, Platform.CPU)
    kwargs = config.engine_kwargs
    assert kwargs["enforce_eager"] is True
    assert kwargs["kv_cache_memory_bytes"] == CPU_KV_CACHE_BYTES
    assert "model" not in kwargs and "served_model_name" not in kwargs
    assert "gpu_memory_utilization" not in kwargs
    assert config.model_id == MODEL
    assert config.model_loading_config.model_source == str(checkpoint)
    assert config.deployment_config["num_replicas"] == 3
    assert "autoscaling_config" not in config.deployment_config
    assert config.deployment_config["max_ongoing_requests"] == 256
    assert config.accelerator_config.kind == "cpu"
    assert config.placement_group_config == {"bundles": [{"CPU": 0.5}]}
    assert config.runtime_env == {"env_vars": {"TURNOUT_CPU_KERNELS": "portable"}}


def test_autoscaling_replaces_the_replica_count(checkpoint):
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=checkpoint)
    scaling = AutoscalingSettings(min_replicas=1, max_replicas=4, target_ongoing_requests=8)
    model = ModelSettings(id=MODEL, autoscaling=scaling, max_ongoing_requests=32)
    deployment = llm_config(model, rec, Platform.CPU).deployment_config
    assert deployment["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8,
        "upscale_delay_s": 30, "downscale_delay_s": 600,
    }
    assert "num_replicas" not in deployment
    assert deployment["max_ongoing_requests"] == 32


def test_custom_resources_join_the_placement_bundle(checkpoint):
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=checkpoint)
    model = ModelSettings(id=MODEL, resources={"worker-a": 0.01})
    assert llm_config(model, rec, Platform.CPU).placement_group_config == {"bundles": [{"CPU": 0.5, "worker-a": 0.01}]}
    gpu = llm_config(model.model_copy(update={"num_gpus": 1}), rec, Platform.CUDA).placement_group_config
    assert gpu["bundle_per_worker"] == {"GPU": 1.0, "CPU": 1, "worker-a": 0.01}


def test_thread_binding_goes_to_the_replica_environment(checkpoint):
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=checkpoint)
    model = ModelSettings(id=MODEL, engine=EngineSettings(cpu_threads_bind="0", kv_cache_memory_bytes=2**27))
    config = llm_config(model, rec, Platform.CPU)
    assert config.runtime_env == {
        "env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "0", "TURNOUT_CPU_KERNELS": "portable"}
    }
    assert config.engine_kwargs["kv_cache_memory_bytes"] == 2**27


def test_the_cpu_kernel_policy_goes_to_the_replica_environment(checkpoint):
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=checkpoint)
    model = ModelSettings(id=MODEL, engine=EngineSettings(cpu_kernels="vllm"))
    assert llm_config(model, rec, Platform.CPU).runtime_env == {"env_vars": {"TURNOUT_CPU_KERNELS": "vllm"}}


def test_the_default_output_length_may_not_pass_the_cap():
    with pytest.raises(ValueError, match="default_max_tokens"):
        LimitsSettings(default_max_tokens=5000, max_tokens_cap=4096)


def test_an_embedding_model_runs_as_a_pooling_model(tmp_path):
    path = write_checkpoint(tmp_path / "emb", "BertModel", chat_template=None)
    rec = record(EMBEDDER, [Capability.EMBEDDINGS], context=512, size_bytes=16, path=path)
    kwargs = llm_config(ModelSettings(id=EMBEDDER), rec, Platform.CPU).engine_kwargs
    assert kwargs["runner"] == "pooling"
    assert kwargs["kv_cache_memory_bytes"] == CPU_EMBEDDING_KV_CACHE_BYTES


def test_compiled_mode_on_cpu_is_refused(checkpoint):
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=checkpoint)
    with pytest.raises(ConfigError) as info:
        llm_config(ModelSettings(id=MODEL, engine=EngineSettings(enforce_eager=False)), rec, Platform.CPU)
    assert info.value.param == "enforce_eager"


def test_int8_at_load_serves_the_int8_copy_from_the_stores_cache(tmp_path):
    from safetensors.torch import save_file
    import torch

    checkpoint = write_checkpoint(tmp_path / "tiny")
    save_file({"model.layers.0.mlp.up_proj.weight": torch.ones(4, 8, dtype=torch.bfloat16)},
              str(checkpoint / "model.safetensors"))
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=checkpoint)
    model = ModelSettings(id=MODEL, engine=EngineSettings(quantization="int8"))
    config = llm_config(model, rec, Platform.CPU, tmp_path / "store")
    served = Path(config.model_loading_config.model_source)
    assert served.parent == tmp_path / "store" / "cache" / "int8"
    assert (served / "config.json").is_file() and config.engine_kwargs["tokenizer"] == str(checkpoint)
    assert config.engine_kwargs["dtype"] == "bfloat16" and "quantization" not in config.engine_kwargs
