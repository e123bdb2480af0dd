"""Where quantization is decided for one engine: a quantized checkpoint checked against the
platform, or quantization at load turned into vLLM's arguments (on the CPU: Turnout's int8 copy).

Pure: what needs the node's hardware is checked with the node's facts when they are given, and
always again on the node (:class:`engine.launch.node.NodeWork`), where the int8 copy is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.launch.cpu import CpuKernels
from engine.launch.node import NodeFacts, NodeWork
from engine.launch.settings import EngineSettings, Platform
from engine.protocol import ModelRecord
from engine.quantize import schemes as quant
from engine.quantize.int8 import int8_target, is_moe
from engine.quantize.schemes import Quantization
from engine.store.checkpoint import read_config


def quantization_kwargs(
    settings: EngineSettings, record: ModelRecord, platform: Platform, store_root: Path | None,
    node: NodeFacts | None = None,
) -> tuple[dict[str, Any], NodeWork | None]:
    """vLLM's quantization arguments for ``record`` and the node work they need (None: nothing)."""
    amx_fp8_allowed = settings.cpu_kernels is CpuKernels.VLLM
    work = NodeWork(model_id=record.id, platform=platform, amx_fp8_allowed=amx_fp8_allowed)
    capability = node.cuda_capability if node else None
    if record.quantization is not None:
        if settings.quantization:
            raise ConfigError(
                f"{record.id} is quantized already ({record.quantization.label}); remove "
                "quantization from its engine settings", param="quantization",
            )
        # an unknown node may have AMX: its own check decides
        fp8_cpu = amx_fp8_allowed and (node.has_amx if node else True)
        quant.check_checkpoint(
            record.quantization, platform.value, model_id=record.id, fp8_cpu=fp8_cpu,
            cuda_capability=capability,
        )
        return {}, work.model_copy(update={"checkpoint": record.quantization})
    if settings.quantization is None:
        return {}, None
    dtype = settings.dtype
    if dtype == "auto":
        dtype = record.dtype if record.dtype in ("bfloat16", "float16") else "bfloat16"
    argument = quant.load_argument(
        settings.quantization, platform.value, dtype=dtype, model_id=record.id,
        cuda_capability=capability,
    )
    work = work.model_copy(update={"load_scheme": settings.quantization, "dtype": dtype})
    if platform is Platform.CPU and not is_moe(read_config(record.path)):
        from engine.store.manager import default_root

        target = int8_target(record.path, Path(store_root or default_root()) / "cache" / "int8", model_id=record.id)
        work = work.model_copy(update={"int8_from": str(record.path), "int8_to": str(target)})
        return {"model": str(target), "dtype": dtype}, work
    return {"quantization": argument, "dtype": dtype}, work


def served_quantization(record: ModelRecord, settings: EngineSettings) -> Quantization | None:
    """The quantization ``record`` is served with under ``settings``: the one applied at load, or
    its checkpoint's (both at once are refused by :func:`quantization_kwargs`)."""
    return quant.at_load(settings.quantization) if settings.quantization else record.quantization
