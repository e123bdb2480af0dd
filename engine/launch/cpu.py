"""The CPU kernel policy (which vLLM CPU kernels an engine may use) and the CPU's features.

The policy is chosen in the configuration and carried to the engine's processes as
:data:`POLICY_ENV`; :mod:`engine.patches.cpu_kernels` applies it there, on the CPU that runs
the kernels. Why ``portable`` is the default is told there.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

POLICY_ENV = "TURNOUT_CPU_KERNELS"


class CpuKernels(str, Enum):
    """How vLLM's CPU kernels are chosen (``EngineSettings.cpu_kernels``)."""

    PORTABLE = "portable"  # no AMX kernels of vLLM's own, mended rotary op: right on every CPU
    VLLM = "vllm"  # vLLM as it is: AMX kernels where the CPU has AMX (wrong answers in 0.32)


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set features that steer vLLM's CPU kernel choice."""

    arch: str
    amx_bf16: bool = False
    amx_tile: bool = False
    avx512f: bool = False
    avx512_bf16: bool = False
    avx2: bool = False

    @property
    def has_amx(self) -> bool:
        """AMX tiles with bf16, what vLLM and torch test before taking an AMX kernel."""
        return self.amx_tile and self.amx_bf16

    def names(self) -> list[str]:
        """The present features, in a fixed order, for reports."""
        flags = ("amx_bf16", "amx_tile", "avx512f", "avx512_bf16", "avx2")
        return [flag for flag in flags if getattr(self, flag)]


def parse_cpuinfo(text: str, arch: str | None = None) -> CpuFeatures:
    """The features listed on the ``flags`` line of ``/proc/cpuinfo`` text."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            break
    present = {name: name in flags for name in ("amx_bf16", "amx_tile", "avx512f", "avx512_bf16", "avx2")}
    return CpuFeatures(arch=arch or platform.machine(), **present)


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    """This machine's CPU features (none known where ``/proc/cpuinfo`` is missing)."""
    try:
        return parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    except OSError:
        return CpuFeatures(arch=platform.machine())


def policy_from_env(environ: dict[str, str] | None = None) -> CpuKernels:
    """The policy named by :data:`POLICY_ENV`; ``portable`` when it is unset.

    Raises ``ValueError`` naming the variable for any other value, so an engine never starts on
    a policy it misread.
    """
    value = (os.environ if environ is None else environ).get(POLICY_ENV, "").strip().lower()
    if not value:
        return CpuKernels.PORTABLE
    try:
        return CpuKernels(value)
    except ValueError:
        choices = ", ".join(p.value for p in CpuKernels)
        raise ValueError(f"{POLICY_ENV}={value!r} is not one of: {choices}") from None
