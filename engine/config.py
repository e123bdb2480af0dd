"""How a model is served: one settings schema, turned into vLLM engine arguments.

:class:`EngineSettings` holds the engine options a user may set; :func:`build_engine_args` combines
them with a model record and the platform into an :class:`EngineLaunch`, with these defaults:

- CPU: eager mode always (torch.compile gives wrong answers on the CPU backend), an explicit KV
  cache size instead of a memory share (the default share refuses to start), MLA latent size 576,
  and the CPU kernel policy (:mod:`engine.cpu_kernels`; ``portable`` keeps vLLM off its AMX
  kernels, whose attention gives wrong answers) in the engine's environment.
- CUDA: CUDA graphs, a GPU memory share, tensor parallelism.

vLLM is imported only by :func:`check_engine_arg_names`, and only when engine_args is not empty.
"""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine import quantization as quant
from engine.attention_paths import MLA_ARCHS, is_mla
from engine.checkpoint import read_config
from engine.cpu_kernels import POLICY_ENV, CpuKernels, cpu_features
from engine.errors import ConfigError
from engine.int8 import int8_checkpoint, is_moe
from engine.protocol import Capability, ModelRecord, ModelType
from engine.quantization import LoadScheme

MiB = 1024 * 1024
CPU_KV_CACHE_BYTES = 512 * MiB
CPU_EMBEDDING_KV_CACHE_BYTES = 64 * MiB
CUDA_GPU_MEMORY_UTILIZATION = 0.90
REASONING_PARSER = "deepseek_r1"
CPU_MLA_LATENT_SIZE = 576  # the only MLA latent size vLLM's CPU backend supports (512 + 64)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts

# Set from the model record or a typed setting; engine_args may not override them.
_RESERVED_ARGS = {"model", "tokenizer", "served_model_name", "runner", "reasoning_parser"}
# Settings that go to vLLM unchanged, and only when set (else vLLM's own default applies).
_PASSED_WHEN_SET = {"max_model_len", "max_num_seqs", "seed", "enable_prefix_caching"}
_COMPACT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}
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
        default=None, gt=0.0, le=1.0, description="Share of GPU memory used (CUDA only; 0.90)."
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
    cpu_kernels: CpuKernels = Field(
        default=CpuKernels.PORTABLE,
        description="CPU only. 'portable': vLLM's kernels take the same AVX-512/AVX2 paths on "
        "every x86 CPU (AMX hidden from vLLM's kernel choice; its AMX attention gives wrong "
        "answers in vLLM-CPU 0.32). 'vllm': vLLM's own choice, AMX kernels on CPUs with AMX.",
    )
    seed: int | None = Field(default=None, ge=0, description="Engine random seed; default: vLLM's.")
    trust_remote_code: bool = Field(default=False, description="Let the checkpoint run code.")
    enable_prefix_caching: bool | None = Field(
        default=None, description="Reuse KV cache across shared prompt prefixes; default: vLLM's."
    )
    compact_json: bool = Field(
        default=True,
        description="Constrained JSON output without whitespace between tokens (small models "
        "otherwise pad it with whitespace until max_tokens). Selects vLLM's xgrammar backend, "
        "which rejects the few schema features it lacks instead of falling back to guidance.",
    )
    reasoning: bool | None = Field(
        default=None,
        description="Split <think> reasoning from the answer (deepseek_r1 parser); default: "
        "whether the model has the reasoning capability.",
    )
    max_loras: int = Field(
        default=0, ge=0, le=64,
        description="LoRA adapters of this model served in one batch (vLLM multi-LoRA); 0: the "
        "model serves no adapters. Adapters registered later are loaded on first use.",
    )
    max_lora_rank: int = Field(
        default=16, description="Largest adapter rank served (one of vLLM's: 1, 8, 16, 32, 64, 128, 256, 320, 512).",
    )
    quantization: LoadScheme | None = Field(
        default=None,
        description="Quantize the weights while loading: 'int8' (CPU: int8 per-channel "
        "weight-only, bf16/fp16 checkpoints; dtype auto becomes bfloat16) or 'fp8' (CUDA, compute "
        "capability 8.9+). Not for checkpoints quantized already.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra vLLM AsyncEngineArgs passed through (e.g. max_num_batched_tokens; "
        "nested configs as dicts, merged into those the settings produce). Names are checked "
        "against vLLM; typed settings and the model paths cannot be set here.",
    )


class EngineLaunch(BaseModel):
    """Everything needed to start a vLLM engine for one model."""

    engine_kwargs: dict[str, Any] = Field(description="Keyword arguments for AsyncEngineArgs.")
    env: dict[str, str] = Field(default_factory=dict, description="Env of the engine process.")
    reasoning_parser: str | None = Field(default=None, description="Also in engine_kwargs.")


def build_engine_args(
    record: ModelRecord,
    settings: EngineSettings | None = None,
    platform: Platform | None = None,
    store_root: Path | None = None,
) -> EngineLaunch:
    """Turn a model record and its settings into engine arguments for ``platform``.

    ``platform`` defaults to :func:`detect_platform`. With ``quantization: int8`` on the CPU a
    dense model is served from its int8 copy (:mod:`engine.int8`), written into the cache of the
    store at ``store_root`` (default: ``$TURNOUT_HOME``) on first use. Raises :class:`ConfigError` (naming the
    offending setting) for combinations that cannot work, e.g. ``enforce_eager=False`` on CPU or a
    DeepSeek MLA size that the CPU backend does not support.
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
    kwargs.update(_quantization_kwargs(settings, record, platform, store_root))
    kwargs.update(_platform_kwargs(settings, platform, embedding=embedding))
    _check_deepseek(record, platform)
    parser = _reasoning_parser(record, settings, embedding=embedding)
    if parser:
        kwargs["reasoning_parser"] = parser
    _pass_through(kwargs, settings.engine_args)
    return EngineLaunch(engine_kwargs=kwargs, env=_env(settings, platform), reasoning_parser=parser)


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


def _quantization_kwargs(
    settings: EngineSettings, record: ModelRecord, platform: Platform, store_root: Path | None
) -> dict[str, Any]:
    capability = _cuda_capability() if platform is Platform.CUDA else None
    if record.quantization is not None:
        if settings.quantization:
            raise ConfigError(
                f"{record.id} is quantized already ({record.quantization.label}); remove "
                "quantization from its engine settings", param="quantization",
            )
        fp8_cpu = settings.cpu_kernels is CpuKernels.VLLM and cpu_features().has_amx
        quant.check_checkpoint(
            record.quantization, platform.value, model_id=record.id, fp8_cpu=fp8_cpu,
            cuda_capability=capability,
        )
        return {}
    if settings.quantization is None:
        return {}
    dtype = settings.dtype
    if dtype == "auto":
        dtype = record.dtype if record.dtype in ("bfloat16", "float16") else "bfloat16"
    argument = quant.load_argument(
        settings.quantization, platform.value, dtype=dtype, model_id=record.id,
        cuda_capability=capability,
    )
    if platform is Platform.CPU and not is_moe(read_config(record.path)):
        from engine.store import default_root

        cache = Path(store_root or default_root()) / "cache" / "int8"
        return {"model": str(int8_checkpoint(record.path, cache, model_id=record.id)), "dtype": dtype}
    return {"quantization": argument, "dtype": dtype}


def _cuda_capability() -> tuple[int, int] | None:
    """The first GPU's compute capability, or None where this process sees no GPU."""
    import torch

    return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None


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


def _mla_config(record: ModelRecord) -> dict[str, Any] | None:
    """The checkpoint's config.json when it is a DeepSeek V2/V3 (MLA) model, else None."""
    if record.family is not ModelType.DEEPSEEK and record.architecture not in MLA_ARCHS:
        return None
    config = read_config(record.path)
    return config if is_mla(config) else None  # else an R1 distill: Llama or Qwen2, no MLA


def _check_deepseek(record: ModelRecord, platform: Platform) -> None:
    config = _mla_config(record)
    if config is None:
        return
    if config.get("model_type") == "deepseek_v3" and not (
        config.get("topk_method") and config.get("scoring_func")
    ):
        raise ConfigError(
            f"{record.id}: a DeepSeek-V3 config.json must name topk_method ('noaux_tc') and "
            "scoring_func ('sigmoid') as the released configs do; without them vLLM cannot load "
            "mlp.gate.e_score_correction_bias",
            param="model",
        )
    if config.get("n_routed_experts") and not all(
        isinstance(config.get(key), int) for key in ("n_group", "topk_group")
    ):
        raise ConfigError(
            f"{record.id}: a DeepSeek MoE config.json must give n_group and topk_group as numbers "
            "(1 and 1 for no group-limited routing, as DeepSeek-V2-Lite's does); vLLM's MoE "
            "router fails on the first request without them",
            param="model",
        )
    rank, rope = config.get("kv_lora_rank"), config.get("qk_rope_head_dim", 0)
    if platform is Platform.CPU and rank is not None and rank + rope != CPU_MLA_LATENT_SIZE:
        raise ConfigError(
            f"{record.id}: MLA latent size kv_lora_rank + qk_rope_head_dim = {rank} + {rope} = "
            f"{rank + rope}, but vLLM's CPU MLA backend supports only {CPU_MLA_LATENT_SIZE} "
            "(512 + 64, as in DeepSeek-V2/V3/R1); serve it on CUDA",
            param="model",
        )


def _reasoning_parser(
    record: ModelRecord, settings: EngineSettings, *, embedding: bool
) -> str | None:
    wanted = settings.reasoning
    if not (record.has(Capability.REASONING) if wanted is None else wanted):
        return None
    if embedding:
        raise ConfigError(f"{record.id} is an embedding model; it cannot reason", param="reasoning")
    tokenizer = record.path / "tokenizer.json"
    text = tokenizer.read_text(errors="ignore") if tokenizer.is_file() else ""
    if '"<think>"' not in text or '"</think>"' not in text:
        raise ConfigError(
            f"{record.id}: the {REASONING_PARSER} reasoning parser needs <think> and </think> "
            "tokens, which the tokenizer lacks",
            param="reasoning",
        )
    return REASONING_PARSER


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
