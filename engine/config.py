"""How a model is served: one settings schema, turned into vLLM engine arguments.

:class:`EngineSettings` is the single, validated description of the engine options a user may
set; :func:`build_engine_args` combines it with a :class:`~engine.protocol.ModelRecord` and the
platform into an :class:`EngineLaunch`, applying the defaults that are known to work there:

- CPU: eager mode always (torch.compile gives wrong answers on the CPU backend), an explicit KV
  cache size instead of a memory share (the default share refuses to start), MLA latent size 576.
- CUDA: CUDA graphs, a GPU memory share, tensor parallelism.

This module does not import vLLM at import time; only the check of pass-through engine argument
names (:func:`check_engine_arg_names`) does, and only when there are any.
"""

from __future__ import annotations

import dataclasses
import os
import re
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.checkpoint import read_config
from engine.errors import ConfigError
from engine.protocol import Capability, ModelRecord, ModelType

MiB = 1024 * 1024
CPU_KV_CACHE_BYTES = 512 * MiB
CPU_EMBEDDING_KV_CACHE_BYTES = 64 * MiB
CUDA_GPU_MEMORY_UTILIZATION = 0.90
REASONING_PARSER = "deepseek_r1"
# vLLM's CPU MLA backend supports only the latent head size of the real DeepSeek models.
CPU_MLA_LATENT_SIZE = 576

_MLA_ARCHS = {"DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"}
_MLA_MODEL_TYPES = {"deepseek_v2", "deepseek_v3"}
_CPU_LIST = r"\d+(-\d+)?(,\d+(-\d+)?)*"
_THREADS_BIND = rf"^(auto|nobind|{_CPU_LIST}(\|{_CPU_LIST})*)$"


class Platform(str, Enum):
    """Where the engine runs."""

    CPU = "cpu"
    CUDA = "cuda"


def detect_platform() -> Platform:
    """``TURNOUT_PLATFORM`` (cpu or cuda) if set, else CUDA when torch sees a GPU, else CPU."""
    override = os.environ.get("TURNOUT_PLATFORM")
    if override:
        try:
            return Platform(override.strip().lower())
        except ValueError:
            raise ConfigError(
                f"TURNOUT_PLATFORM={override!r} is not one of: cpu, cuda", param="TURNOUT_PLATFORM"
            ) from None
    import torch

    return Platform.CUDA if torch.cuda.is_available() else Platform.CPU


class EngineSettings(BaseModel):
    """User-settable engine options for one model; ``None`` means "the platform default"."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Weight and activation dtype; auto follows the checkpoint."
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Longest prompt + output in tokens; default: the model's."
    )
    enforce_eager: bool | None = Field(
        default=None,
        description="Run without CUDA graphs / torch.compile. Always true on CPU (compiled mode "
        "gives wrong answers there); default false on CUDA.",
    )
    kv_cache_memory_bytes: int | None = Field(
        default=None,
        ge=MiB,
        description="KV cache size in bytes. CPU default: 512 MiB (generative), 64 MiB "
        "(embedding). On CUDA it overrides gpu_memory_utilization.",
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Share of GPU memory for weights and KV cache (CUDA only; default 0.90).",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="GPUs per replica.")
    max_num_seqs: int | None = Field(
        default=None, ge=1, le=4096, description="Most sequences batched at once; default: vLLM's."
    )
    cpu_threads_bind: str | None = Field(
        default=None,
        pattern=_THREADS_BIND,
        description="CPU cores for the engine's OpenMP threads (VLLM_CPU_OMP_THREADS_BIND): "
        "'auto', 'nobind', or core lists such as '0', '0-1', '0,2-3', one per tensor-parallel "
        "rank separated by '|'. CPU only; default: vLLM's 'auto'.",
    )
    seed: int | None = Field(default=None, ge=0, description="Engine random seed.")
    trust_remote_code: bool = Field(
        default=False, description="Allow the checkpoint to run its own Python code."
    )
    enable_prefix_caching: bool | None = Field(
        default=None, description="Reuse KV cache across shared prompt prefixes; default: vLLM's."
    )
    reasoning: bool | None = Field(
        default=None,
        description="Split <think> reasoning from the answer (deepseek_r1 parser); default: "
        "whether the model has the reasoning capability.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra vLLM AsyncEngineArgs passed through unchanged (e.g. "
        "max_num_batched_tokens). Names are checked against vLLM; options with a typed "
        "setting above, and the model paths, cannot be set here.",
    )


class EngineLaunch(BaseModel):
    """Everything needed to start a vLLM engine for one model."""

    engine_kwargs: dict[str, Any] = Field(description="Keyword arguments for AsyncEngineArgs.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment the engine process must start with."
    )
    reasoning_parser: str | None = Field(
        default=None, description="vLLM reasoning parser name, also in engine_kwargs."
    )


def build_engine_args(
    record: ModelRecord,
    settings: EngineSettings | None = None,
    platform: Platform | None = None,
) -> EngineLaunch:
    """Turn a model record and its settings into engine arguments for ``platform``.

    ``platform`` defaults to :func:`detect_platform`. Raises :class:`ConfigError` (naming the
    offending setting) for combinations that cannot work, e.g. ``enforce_eager=False`` on CPU or a
    DeepSeek MLA size that the CPU backend does not support.
    """
    settings = settings or EngineSettings()
    platform = platform or detect_platform()
    embedding = _is_embedding(record)
    kwargs: dict[str, Any] = {
        "model": str(record.path),
        "tokenizer": str(record.path),
        "served_model_name": record.id,
        "dtype": settings.dtype,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "trust_remote_code": settings.trust_remote_code,
    }
    if embedding:
        kwargs["runner"] = "pooling"
    kwargs.update(_optional_kwargs(settings, record))
    if platform is Platform.CPU:
        kwargs.update(_cpu_kwargs(settings, embedding=embedding))
        _check_cpu_mla(record)
    else:
        kwargs.update(_cuda_kwargs(settings))
    _check_deepseek_routing(record)
    parser = _reasoning_parser(record, settings, embedding=embedding)
    if parser:
        kwargs["reasoning_parser"] = parser
    kwargs.update(_pass_through(settings.engine_args, reserved=set(kwargs)))
    return EngineLaunch(
        engine_kwargs=kwargs, env=_env(settings, platform), reasoning_parser=parser
    )


def check_engine_arg_names(names: set[str]) -> None:
    """Raise :class:`ConfigError` naming every entry of ``names`` that AsyncEngineArgs lacks."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(names - known)
    if unknown:
        raise ConfigError(
            f"unknown vLLM engine argument(s) in engine_args: {', '.join(unknown)}",
            param="engine_args",
        )


def _is_embedding(record: ModelRecord) -> bool:
    return record.family is ModelType.EMBEDDING or record.has(Capability.EMBEDDINGS)


def _optional_kwargs(settings: EngineSettings, record: ModelRecord) -> dict[str, Any]:
    if settings.max_model_len is not None and settings.max_model_len > record.context_length:
        raise ConfigError(
            f"max_model_len {settings.max_model_len} exceeds the context length of "
            f"{record.id} ({record.context_length})",
            param="max_model_len",
        )
    optional = {
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        "seed": settings.seed,
        "enable_prefix_caching": settings.enable_prefix_caching,
    }
    return {key: value for key, value in optional.items() if value is not None}


def _cpu_kwargs(settings: EngineSettings, *, embedding: bool) -> dict[str, Any]:
    if settings.enforce_eager is False:
        raise ConfigError(
            "enforce_eager=false is not supported on CPU: vLLM's compiled mode gives wrong "
            "answers on the CPU backend",
            param="enforce_eager",
        )
    if settings.gpu_memory_utilization is not None:
        raise ConfigError(
            "gpu_memory_utilization is for CUDA; on CPU set kv_cache_memory_bytes",
            param="gpu_memory_utilization",
        )
    default_kv = CPU_EMBEDDING_KV_CACHE_BYTES if embedding else CPU_KV_CACHE_BYTES
    return {
        "enforce_eager": True,
        "kv_cache_memory_bytes": settings.kv_cache_memory_bytes or default_kv,
    }


def _cuda_kwargs(settings: EngineSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "enforce_eager": bool(settings.enforce_eager),
        "gpu_memory_utilization": settings.gpu_memory_utilization or CUDA_GPU_MEMORY_UTILIZATION,
    }
    if settings.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = settings.kv_cache_memory_bytes
    return kwargs


def _mla_config(record: ModelRecord) -> dict[str, Any] | None:
    """The checkpoint's config.json when it is a DeepSeek V2/V3 (MLA) model, else None."""
    if record.family is not ModelType.DEEPSEEK and record.architecture not in _MLA_ARCHS:
        return None
    config = read_config(record.path)
    archs = config.get("architectures") or []
    if config.get("model_type") in _MLA_MODEL_TYPES or any(a in _MLA_ARCHS for a in archs):
        return config
    return None  # an R1 distill: Llama or Qwen2 architecture, no MLA


def _check_cpu_mla(record: ModelRecord) -> None:
    config = _mla_config(record)
    if config is None or config.get("kv_lora_rank") is None:
        return
    kv_lora_rank = config["kv_lora_rank"]
    rope_dim = config.get("qk_rope_head_dim", 0)
    if kv_lora_rank + rope_dim != CPU_MLA_LATENT_SIZE:
        raise ConfigError(
            f"{record.id}: MLA latent size kv_lora_rank + qk_rope_head_dim = {kv_lora_rank} + "
            f"{rope_dim} = {kv_lora_rank + rope_dim}, but vLLM's CPU MLA backend supports only "
            f"{CPU_MLA_LATENT_SIZE} (512 + 64, as in DeepSeek-V2/V3/R1); serve it on CUDA",
            param="model",
        )


def _check_deepseek_routing(record: ModelRecord) -> None:
    config = _mla_config(record)
    if config is None or config.get("model_type") != "deepseek_v3":
        return
    if config.get("topk_method") is None or config.get("scoring_func") is None:
        raise ConfigError(
            f"{record.id}: config.json of a DeepSeek-V3 checkpoint must name topk_method "
            "('noaux_tc') and scoring_func ('sigmoid'), as the released configs do; without them "
            "vLLM cannot load mlp.gate.e_score_correction_bias",
            param="model",
        )


def _reasoning_parser(record: ModelRecord, settings: EngineSettings, *, embedding: bool) -> str | None:
    wanted = settings.reasoning if settings.reasoning is not None else record.has(Capability.REASONING)
    if not wanted:
        return None
    if embedding:
        raise ConfigError(f"{record.id} is an embedding model; it cannot reason", param="reasoning")
    if not _has_think_tokens(record):
        raise ConfigError(
            f"{record.id}: the {REASONING_PARSER} reasoning parser needs <think> and </think> "
            "tokens, which the tokenizer lacks",
            param="reasoning",
        )
    return REASONING_PARSER


def _has_think_tokens(record: ModelRecord) -> bool:
    tokenizer = record.path / "tokenizer.json"
    if not tokenizer.is_file():
        return False
    text = tokenizer.read_text(errors="ignore")
    return '"<think>"' in text and '"</think>"' in text


def _pass_through(engine_args: dict[str, Any], *, reserved: set[str]) -> dict[str, Any]:
    typed = set(EngineSettings.model_fields) | {"reasoning_parser"}
    clashes = sorted(set(engine_args) & (reserved | typed))
    if clashes:
        raise ConfigError(
            f"engine_args cannot set {', '.join(clashes)}: use the typed setting (the model "
            "path and name come from the model record)",
            param="engine_args",
        )
    if engine_args:
        check_engine_arg_names(set(engine_args))
    return dict(engine_args)


def _env(settings: EngineSettings, platform: Platform) -> dict[str, str]:
    bind = settings.cpu_threads_bind
    if bind is None:
        return {}
    if platform is not Platform.CPU:
        raise ConfigError("cpu_threads_bind applies to the CPU platform only", param="cpu_threads_bind")
    ranks = bind.split("|")
    if bind not in ("auto", "nobind") and len(ranks) != settings.tensor_parallel_size:
        raise ConfigError(
            f"cpu_threads_bind {bind!r} lists {len(ranks)} core set(s) for "
            f"tensor_parallel_size {settings.tensor_parallel_size}; give one per rank, "
            "separated by '|'",
            param="cpu_threads_bind",
        )
    return {"VLLM_CPU_OMP_THREADS_BIND": bind}
