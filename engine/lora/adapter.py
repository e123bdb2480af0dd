"""LoRA adapters: records tied to a base model, their ids, and the check that one fits its base.

An adapter's id is its base model's id and its own name: ``local/llama/smollm2-135m-instruct:zubrowka``.
It is served by its base model's replicas (vLLM multi-LoRA), so it can only be checked against that
base: :func:`inspect_adapter` reads a PEFT directory (``adapter_config.json`` and
``adapter_model.safetensors``) and compares every LoRA matrix with the base weight it adapts, by
name and shape, without loading any weights.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, Field

from engine.errors import InvalidCheckpointError, InvalidModelNameError
from engine.protocol import ModelRecord, parse_model_id, validate_name

SEPARATOR = ":"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


class AdapterSource(str, Enum):
    """Where an adapter came from."""

    PATH = "path"
    HUGGINGFACE = "huggingface"
    FINETUNED = "finetuned"


class AdapterFacts(BaseModel):
    """What :func:`inspect_adapter` reads from a PEFT LoRA directory."""

    rank: int = Field(ge=1)
    alpha: float
    target_modules: list[str]
    size_bytes: int = Field(ge=0)


class AdapterRecord(BaseModel):
    """One registered adapter, as persisted in the adapter registry."""

    id: str = Field(description="<base model id>:<name>")
    name: str
    base: str = Field(description="Id of the base model whose replicas serve it.")
    path: Path = Field(description="PEFT directory (adapter_config.json, adapter_model.safetensors).")
    source: AdapterSource
    source_ref: str = Field(description="Directory, hub repo id or training data it came from.")
    revision: str | None = None
    rank: int = Field(ge=1)
    alpha: float
    target_modules: list[str]
    size_bytes: int = Field(ge=0)
    owned: bool = Field(default=True, description="Files live in the store and go with the record.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    metadata: dict[str, str] = Field(default_factory=dict, description="e.g. training figures.")


def adapter_id(base_id: str, name: str) -> str:
    """``<base id>:<name>`` after validating both parts."""
    parse_model_id(base_id)
    return f"{base_id}{SEPARATOR}{validate_name(name)}"


def is_adapter_id(value: str) -> bool:
    """Whether ``value`` has an adapter id's shape (a local model id, ``:``, a name)."""
    return value.startswith("local/") and SEPARATOR in value


def parse_adapter_id(value: str) -> tuple[str, str]:
    """Split ``<base id>:<name>`` into the base id and the name; raises InvalidModelNameError."""
    base, sep, name = value.rpartition(SEPARATOR)
    if not sep or not base:
        raise InvalidModelNameError(
            f"invalid adapter id {value!r}: expected 'local/<family>/<name>:<adapter>'", param="model"
        )
    parse_model_id(base)
    return base, validate_name(name)


def inspect_adapter(path: Path, base: ModelRecord) -> AdapterFacts:
    """Read a PEFT LoRA directory and check it against ``base``; raises InvalidCheckpointError.

    Checked: a LoRA (not another PEFT method), safetensors weights, and for every adapted module a
    base weight of that name whose shape matches the LoRA matrices (``A``: rank x in, ``B``: out x
    rank). An adapter trained on another architecture or size fails here, naming a module.
    """
    config = _read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise InvalidCheckpointError(f"{path} has no {WEIGHTS_FILE}", param="path")
    rank = int(config.get("r") or 0)
    if rank < 1:
        raise InvalidCheckpointError(f"{path / CONFIG_FILE}: 'r' (the rank) must be a positive integer", param="path")
    if config.get("modules_to_save"):
        raise InvalidCheckpointError(
            f"{path / CONFIG_FILE}: modules_to_save ({config['modules_to_save']}) are not served by vLLM's "
            "LoRA; train the adapter without them", param="path",
        )
    adapted = _lora_shapes(weights)
    if not adapted:
        raise InvalidCheckpointError(f"{weights} holds no LoRA matrices (lora_A / lora_B)", param="path")
    base_shapes = _base_shapes(base.path)
    for module, (a_shape, b_shape) in sorted(adapted.items()):
        shape = base_shapes.get(module + ".weight")
        if shape is None:
            raise InvalidCheckpointError(
                f"the adapter changes {module}, which {base.id} ({base.architecture}) does not have", param="path",
            )
        out_features, in_features = shape[0], shape[-1]
        if tuple(a_shape) != (rank, in_features) or tuple(b_shape) != (out_features, rank):
            raise InvalidCheckpointError(
                f"the adapter's {module} (A {list(a_shape)}, B {list(b_shape)}) does not fit {base.id}'s "
                f"weight {list(shape)} at rank {rank}", param="path",
            )
    modules = sorted({m.rsplit(".", 1)[-1] for m in adapted})
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return AdapterFacts(rank=rank, alpha=float(config.get("lora_alpha") or rank), target_modules=modules, size_bytes=size)


def _read_config(path: Path) -> dict:
    file = path / CONFIG_FILE
    try:
        config = json.loads(file.read_text())
    except FileNotFoundError:
        raise InvalidCheckpointError(f"{path} is not a PEFT adapter: it has no {CONFIG_FILE}", param="path") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidCheckpointError(f"{file} is unreadable: {e}", param="path") from e
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise InvalidCheckpointError(f"{file}: peft_type is {kind!r}; only LORA adapters are served", param="path")
    return config


def _lora_shapes(weights: Path) -> dict[str, tuple[list[int], list[int]]]:
    """module name (as in the base checkpoint) -> (lora_A shape, lora_B shape)."""
    from safetensors import safe_open

    a: dict[str, list[int]] = {}
    b: dict[str, list[int]] = {}
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                for marker, found in ((".lora_A.", a), (".lora_B.", b)):
                    if marker in key:
                        module = key.split(marker, 1)[0].removeprefix(_PEFT_PREFIX)
                        found[module] = list(f.get_slice(key).get_shape())
    except Exception as e:
        raise InvalidCheckpointError(f"{weights} is unreadable: {e}", param="path") from e
    missing = sorted(set(a) ^ set(b))
    if missing:
        raise InvalidCheckpointError(f"{weights}: {missing[0]} has only one of lora_A and lora_B", param="path")
    return {m: (a[m], b[m]) for m in a}


def _base_shapes(checkpoint: Path) -> dict[str, list[int]]:
    """weight name -> shape, for every safetensors file of the base checkpoint (headers only)."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                shapes[key] = list(f.get_slice(key).get_shape())
    if not shapes:
        raise InvalidCheckpointError(
            f"the base checkpoint {checkpoint} has no safetensors weights to check the adapter against", param="path",
        )
    return shapes
