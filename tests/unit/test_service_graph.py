"""``service.graph.llm_config``: one model's ``ray.serve.llm`` configuration (no engine started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.launch.node import NodeFacts, NodeWork, prepare_node
from engine.launch.plan import CPU_EMBEDDING_KV_CACHE_BYTES, CPU_KV_CACHE_BYTES
from engine.launch.settings import EngineSettings, Platform
from engine.protocol import Capability
from service.config import LimitsSettings
from service.graph import llm_config
from service.model_config import AutoscalingSettings, ModelSettings
from testkit.fakes import record
from tests.checkpoints import write_checkpoint

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
    import torch
    from safetensors.torch import save_file

    checkpoint = write_checkpoint(tmp_path / "tiny")
    save_file({"model.layers.0.mlp.up_proj.weight": torch.ones(4, 8, dtype=torch.bfloat16)},
              str(checkpoint / "model.safetensors"))
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=checkpoint)
    model = ModelSettings(id=MODEL, engine=EngineSettings(quantization="int8"))
    config = llm_config(model, rec, Platform.CPU, tmp_path / "store")
    served = Path(config.model_loading_config.model_source)
    assert served.parent == tmp_path / "store" / "cache" / "int8"
    assert config.engine_kwargs["tokenizer"] == str(checkpoint)
    assert config.engine_kwargs["dtype"] == "bfloat16" and "quantization" not in config.engine_kwargs
    assert not served.exists()  # building the graph writes nothing: the replica's node does
    work = NodeWork.from_env(config.runtime_env["env_vars"])
    assert (work.int8_from, work.int8_to) == (str(checkpoint), str(served))
    prepare_node(work, NodeFacts())
    assert (served / "config.json").is_file()


def test_a_head_without_gpus_builds_an_fp8_graph_that_its_gpu_node_checks(tmp_path, monkeypatch):
    import torch

    def no_gpu_here():
        raise AssertionError("the graph asked this machine's GPU")

    monkeypatch.setattr(torch.cuda, "is_available", no_gpu_here)
    rec = record(MODEL, [Capability.CHAT], context=2048, size_bytes=16, path=write_checkpoint(tmp_path / "tiny"))
    model = ModelSettings(id=MODEL, engine=EngineSettings(quantization="fp8"))
    config = llm_config(model, rec, Platform.CUDA, tmp_path / "store")
    assert config.engine_kwargs["quantization"] == "fp8" and config.accelerator_config.kind == "gpu"
    work = NodeWork.from_env(config.runtime_env["env_vars"])
    assert (work.platform, work.load_scheme) == (Platform.CUDA, "fp8")
    prepare_node(work, NodeFacts(cuda_capability=(9, 0)))  # a Hopper worker runs it
    with pytest.raises(ConfigError, match="compute capability 8.9 or newer"):
        prepare_node(work, NodeFacts(cuda_capability=(7, 5)))  # a T4 worker refuses it by name


