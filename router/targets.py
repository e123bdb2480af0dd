"""Building targets: local ones from model-store records, cloud ones from declarations."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from engine.errors import ConfigError
from engine.protocol import Capability, ModelRecord
from router.protocol import SizeClass, Target, TargetKind
from router.settings import CloudModelSettings, SizeThresholds

_PROVIDER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Bytes per parameter, matched as substrings of the dtype name; the first match wins.
_DTYPE_BYTES = (
    ("float64", 8.0), ("float32", 4.0), ("fp32", 4.0), ("16", 2.0),
    ("int8", 1.0), ("fp8", 1.0), ("float8", 1.0), ("int4", 0.5), ("fp4", 0.5),
)
_DEFAULT_BYTES = 2.0  # "auto" checkpoints are almost always bf16/fp16


def estimate_parameters(size_bytes: int, dtype: str, weight_bits: int | None = None) -> int:
    """Parameter count implied by a checkpoint's size on disk and its dtype (or, for a
    quantized checkpoint, its weights' bit width)."""
    lowered = dtype.lower()
    per_param = next((b for key, b in _DTYPE_BYTES if key in lowered), _DEFAULT_BYTES)
    if weight_bits is not None:
        per_param = weight_bits / 8
    return math.floor(size_bytes / per_param)


def local_target(
    record: ModelRecord,
    *,
    thresholds: SizeThresholds | None = None,
    size: SizeClass | None = None,
    parameters: int | None = None,
) -> Target:
    """The target for a registered local model.

    ``size`` overrides the derived size class; ``parameters`` overrides the estimate made from
    ``record.size_bytes`` and ``record.dtype``.
    """
    count = parameters
    quantized = record.quantization
    if count is None:
        on_disk = quantized.weight_bits if quantized and quantized.origin == "checkpoint" else None
        count = estimate_parameters(record.size_bytes, record.dtype, on_disk)
    return Target(
        id=record.id,
        kind=TargetKind.LOCAL,
        name=record.name,
        family=record.family,
        capabilities=frozenset(record.capabilities),
        context_length=record.context_length,
        size=size or (thresholds or SizeThresholds()).classify(count),
        parameters=count,
        quantization=quantized,
    )


def cloud_target(
    provider: str,
    model: str,
    capabilities: Iterable[Capability],
    context_length: int,
    *,
    size: SizeClass = SizeClass.LARGE,
) -> Target:
    """The target for ``model`` at cloud ``provider``; its id is ``cloud/<provider>/<model>``."""
    if not _PROVIDER.match(provider):
        raise ConfigError(f"invalid cloud provider name {provider!r}", param="provider")
    if not model or any(c.isspace() for c in model):
        raise ConfigError(f"invalid cloud model name {model!r}", param="model")
    return Target(
        id=f"cloud/{provider}/{model}",
        kind=TargetKind.CLOUD,
        name=model,
        provider=provider,
        capabilities=frozenset(capabilities),
        context_length=context_length,
        size=size,
    )


def cloud_targets(declared: Iterable[CloudModelSettings]) -> list[Target]:
    """Targets for the cloud models declared in the router settings, in declared order."""
    return [
        cloud_target(c.provider, c.model, c.capabilities, c.context_length, size=c.size)
        for c in declared
    ]
