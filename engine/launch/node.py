"""What only the node that runs an engine knows or does, kept out of the launch plan.

:func:`engine.launch.plan.build_engine_args` is pure: a model record, settings and the facts of
the node that will run the engine (:class:`NodeFacts`) give vLLM's arguments. Where those facts
are unknown (a graph built on a Ray head without GPUs, for GPU workers), the checks that need them
are left, with every side effect the plan asks for (the int8 copy), to :func:`prepare_node`, which
runs where the engine starts: in the model's replica (``service.serve_overrides.engine_class``)
or in :meth:`engine.runtime.LocalEngine.start`, just before vLLM loads the model. The plan hands
that work on as :class:`NodeWork`, in the engine's environment (:data:`NODE_WORK_ENV`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engine.launch.cpu import cpu_features
from engine.launch.settings import Platform
from engine.quantize import schemes as quant
from engine.quantize.int8 import ensure_int8_copy
from engine.quantize.schemes import Quantization

NODE_WORK_ENV = "TURNOUT_NODE_WORK"


class NodeFacts(BaseModel):
    """The hardware facts of one node that decide whether a quantization scheme runs there."""

    model_config = ConfigDict(frozen=True)

    has_amx: bool = False
    cuda_capability: tuple[int, int] | None = None

    @classmethod
    def here(cls, platform: Platform) -> NodeFacts:
        """This machine's facts (the GPU is asked only for CUDA)."""
        capability = cuda_capability() if platform is Platform.CUDA else None
        return cls(has_amx=cpu_features().has_amx, cuda_capability=capability)


class NodeWork(BaseModel):
    """What the engine's node must check and write before the engine starts."""

    model_id: str
    platform: Platform
    checkpoint: Quantization | None = None  # a quantized checkpoint: checked against the node
    load_scheme: str | None = None  # quantization at load: checked against the node's GPU
    dtype: str = "auto"
    amx_fp8_allowed: bool = False  # the 'vllm' CPU kernel policy: AMX FP8 kernels where there is AMX
    int8_from: str | None = None  # write the W8A8 copy of this checkpoint ...
    int8_to: str | None = None  # ... here (the plan's model path)

    def env(self) -> dict[str, str]:
        """The engine environment that carries this work to the node."""
        return {NODE_WORK_ENV: self.model_dump_json()}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> NodeWork | None:
        """The work in this process's environment, if any."""
        text = (os.environ if environ is None else environ).get(NODE_WORK_ENV)
        return cls.model_validate_json(text) if text else None

    def check(self, facts: NodeFacts) -> None:
        """Raise :class:`engine.errors.ConfigError` when the node cannot run the planned scheme."""
        if self.checkpoint is not None:
            quant.check_checkpoint(
                self.checkpoint, self.platform.value, model_id=self.model_id,
                fp8_cpu=self.amx_fp8_allowed and facts.has_amx, cuda_capability=facts.cuda_capability,
            )
        if self.load_scheme is not None:
            quant.load_argument(self.load_scheme, self.platform.value, dtype=self.dtype,
                                model_id=self.model_id, cuda_capability=facts.cuda_capability)


def prepare_node(work: NodeWork | None, facts: NodeFacts | None = None) -> None:
    """Do ``work`` on this node (facts: this machine's unless given): check, then write the int8 copy."""
    if work is None:
        return
    work.check(facts or NodeFacts.here(work.platform))
    if work.int8_from and work.int8_to:
        ensure_int8_copy(Path(work.int8_from), Path(work.int8_to))


def cuda_capability() -> tuple[int, int] | None:
    """The first GPU's compute capability, or None where this process sees no GPU."""
    import torch

    return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
