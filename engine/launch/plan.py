"""How a model is served: one settings schema, turned into vLLM engine arguments.

:class:`EngineSettings` holds the engine options a user may set; :func:`build_engine_args` combines
them with a model record and the platform into an :class:`EngineLaunch`, with these defaults:

- CPU: eager mode always (torch.compile gives wrong answers on the CPU backend), an explicit KV
  cache size instead of a memory share (the default share refuses to start), MLA latent size 576,
  and the CPU kernel policy (:mod:`engine.patches.cpu_kernels`; ``portable`` keeps vLLM off its AMX
  kernels, whose attention gives wrong answers) in the engine's environment.
- CUDA: CUDA graphs, a GPU memory share, tensor parallelism.

vLLM is imported only by :func:`check_engine_arg_names`, and only when engine_args is not empty.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from engine.errors import ConfigError
from engine.launch.cpu import POLICY_ENV
from engine.launch.families import check_deepseek, reasoning_parser
from engine.launch.node import NodeFacts, NodeWork
from engine.launch.quantization import quantization_kwargs
from engine.launch.settings import (
    LORA_RANKS,
    EngineSettings,
    MiB,
    Platform,
    detect_platform,
)
from engine.protocol import Capability, ModelRecord, ModelType

CPU_KV_CACHE_BYTES = 512 * MiB
CPU_EMBEDDING_KV_CACHE_BYTES = 64 * MiB
CUDA_GPU_MEMORY_UTILIZATION = 0.90

# Set from the model record or a typed setting; engine_args may not override them.
_RESERVED_ARGS = {"model", "tokenizer", "served_model_name", "runner", "reasoning_parser"}
# Settings that go to vLLM unchanged, and only when set (else vLLM's own default applies).
_PASSED_WHEN_SET = {"max_model_len", "max_num_seqs", "seed", "enable_prefix_caching"}
_COMPACT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}


class EngineLaunch(BaseModel):
    """Everything needed to start a vLLM engine for one model."""

    engine_kwargs: dict[str, Any] = Field(description="Keyword arguments for AsyncEngineArgs.")
    env: dict[str, str] = Field(default_factory=dict, description="Env of the engine process.")
    reasoning_parser: str | None = Field(default=None, description="Also in engine_kwargs.")
    node_work: NodeWork | None = Field(default=None, description="Done where the engine starts; also in env.")


def build_engine_args(
    record: ModelRecord,
    settings: EngineSettings | None = None,
    platform: Platform | None = None,
    store_root: Path | None = None,
    node: NodeFacts | None = None,
) -> EngineLaunch:
    """Turn a model record and its settings into engine arguments for ``platform``; no side effects.

    ``platform`` defaults to :func:`detect_platform`; ``node`` holds the facts of the node that
    will run the engine, when known (checks that need unknown facts are left to the node). With
    ``quantization: int8`` on the CPU a dense model is served from its int8 copy
    (:mod:`engine.quantize.int8`) in the cache of the store at ``store_root`` (default:
    ``$TURNOUT_HOME``), which the node writes on first use (``node_work``). Raises
    :class:`ConfigError` (naming the offending setting) for combinations that cannot work, e.g.
    ``enforce_eager=False`` on CPU or a DeepSeek MLA size that the CPU backend does not support.
    """
    settings = settings or EngineSettings()
    platform = platform or detect_platform()
    embedding = record.family is ModelType.EMBEDDING or record.has(Capability.EMBEDDINGS)
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
    elif settings.compact_json:
        kwargs["structured_outputs_config"] = dict(_COMPACT_JSON)
    kwargs.update(_optional_kwargs(settings, record))
    kwargs.update(_lora_kwargs(settings, record, embedding=embedding))
    quantized, work = quantization_kwargs(settings, record, platform, store_root, node)
    kwargs.update(quantized)
    kwargs.update(_platform_kwargs(settings, platform, embedding=embedding))
    check_deepseek(record, platform)
    parser = reasoning_parser(record, settings, embedding=embedding)
    if parser:
        kwargs["reasoning_parser"] = parser
    _pass_through(kwargs, settings.engine_args)
    env = _env(settings, platform) | (work.env() if work else {})
    return EngineLaunch(engine_kwargs=kwargs, env=env, reasoning_parser=parser, node_work=work)


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


def _optional_kwargs(settings: EngineSettings, record: ModelRecord) -> dict[str, Any]:
    if settings.max_model_len is not None and settings.max_model_len > record.context_length:
        raise ConfigError(
            f"max_model_len {settings.max_model_len} exceeds the context length of "
            f"{record.id} ({record.context_length})",
            param="max_model_len",
        )
    return settings.model_dump(include=_PASSED_WHEN_SET, exclude_none=True)


def _lora_kwargs(settings: EngineSettings, record: ModelRecord, *, embedding: bool) -> dict[str, Any]:
    if settings.max_lora_rank not in LORA_RANKS:
        raise ConfigError(
            f"max_lora_rank {settings.max_lora_rank} is not one of vLLM's: {', '.join(map(str, LORA_RANKS))}",
            param="max_lora_rank",
        )
    if not settings.max_loras:
        return {}
    if embedding:
        raise ConfigError(f"{record.id} is an embedding model; adapters are for generative models", param="max_loras")
    return {"enable_lora": True, "max_loras": settings.max_loras, "max_lora_rank": settings.max_lora_rank}


def _platform_kwargs(settings: EngineSettings, platform: Platform, *, embedding: bool) -> dict:
    kv_bytes = settings.kv_cache_memory_bytes
    if platform is Platform.CUDA:
        share = settings.gpu_memory_utilization or CUDA_GPU_MEMORY_UTILIZATION
        kwargs = {"enforce_eager": bool(settings.enforce_eager), "gpu_memory_utilization": share}
        return kwargs | ({"kv_cache_memory_bytes": kv_bytes} if kv_bytes else {})
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
    kwargs = {"enforce_eager": True, "kv_cache_memory_bytes": kv_bytes or default_kv}
    if settings.tensor_parallel_size == 1 and settings.engine_args.get("pipeline_parallel_size", 1) == 1:
        # One rank: the model runs in the engine core's process instead of a worker process of
        # its own (vLLM's "mp" executor). Same throughput; one process (a ~10 s import of vLLM
        # and ~0.9 GiB) less per engine, and no shared-memory queue between scheduler and worker.
        kwargs["distributed_executor_backend"] = "uni"
    return kwargs


def _pass_through(kwargs: dict[str, Any], engine_args: dict[str, Any]) -> None:
    """Add ``engine_args`` to ``kwargs``; a dict merges into a dict the settings produced."""
    clashes = sorted(set(engine_args) & (_RESERVED_ARGS | set(EngineSettings.model_fields)))
    if clashes:
        raise ConfigError(
            f"engine_args cannot set {', '.join(clashes)}: they are typed settings or come "
            "from the model record",
            param="engine_args",
        )
    if engine_args:
        check_engine_arg_names(set(engine_args))
    for key, value in engine_args.items():
        base = kwargs.get(key)
        kwargs[key] = base | value if isinstance(base, dict) and isinstance(value, dict) else value


def _env(settings: EngineSettings, platform: Platform) -> dict[str, str]:
    if platform is not Platform.CPU:
        if settings.cpu_threads_bind is not None:
            raise ConfigError("cpu_threads_bind applies to CPU only", param="cpu_threads_bind")
        return {}
    env = {POLICY_ENV: settings.cpu_kernels.value}
    bind = settings.cpu_threads_bind
    if bind is None:
        return env
    ranks = bind.split("|")
    if bind not in ("auto", "nobind") and len(ranks) != settings.tensor_parallel_size:
        raise ConfigError(
            f"cpu_threads_bind {bind!r} lists {len(ranks)} core set(s) for "
            f"tensor_parallel_size {settings.tensor_parallel_size}; give one per rank, "
            "separated by '|'",
            param="cpu_threads_bind",
        )
    return env | {"VLLM_CPU_OMP_THREADS_BIND": bind}
