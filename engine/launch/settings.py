"""The one schema of an engine's settings, and the platforms an engine runs on."""

from __future__ import annotations

import os
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ConfigError
from engine.launch.cpu import CpuKernels
from engine.quantize.schemes import LoadScheme

MiB = 1024 * 1024
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
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
