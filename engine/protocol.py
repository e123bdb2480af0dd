"""Contracts of the model store: the kinds of models, their capabilities and their records.

A :class:`ModelRecord` is everything the router and the engine configuration need to know about a
servable checkpoint, without opening it again.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, Field

from engine.errors import InvalidModelNameError
from engine.quantize.schemes import Quantization


class ModelType(str, Enum):
    """Model family; the middle part of a model id (``local/<family>/<name>``)."""

    LLAMA = "llama"
    DEEPSEEK = "deepseek"
    EMBEDDING = "embedding"
    CUSTOM = "custom"


class Capability(str, Enum):
    """What a model can be asked to do; the router matches requests against these."""

    CHAT = "chat"
    COMPLETION = "completion"
    JSON_SCHEMA = "json_schema"
    TOOLS = "tools"
    EMBEDDINGS = "embeddings"
    REASONING = "reasoning"
    MODERATION = "moderation"


class ModelFormat(str, Enum):
    """On-disk weight format of a registered checkpoint."""

    SAFETENSORS = "safetensors"
    PYTORCH = "pytorch"


class SourceKind(str, Enum):
    """Where a model came from."""

    HUGGINGFACE = "huggingface"
    GGUF = "gguf"
    OLLAMA = "ollama"
    PATH = "path"
    GENERATED = "generated"


class CheckpointInfo(BaseModel):
    """Facts read from a checkpoint directory (see :func:`engine.store.checkpoint.inspect_checkpoint`)."""

    architecture: str = Field(description="First entry of config.json `architectures`.")
    model_type: str = Field(description="config.json `model_type` (e.g. llama, deepseek_v3).")
    family: ModelType
    format: ModelFormat
    context_length: int = Field(ge=1, description="Longest sequence the model supports, in tokens.")
    dtype: str
    size_bytes: int = Field(ge=0)
    capabilities: list[Capability]
    quantization: Quantization | None = Field(
        default=None, description="From config.json quantization_config; None: plain weights."
    )


class ModelRecord(BaseModel):
    """One registered model, as persisted in the registry."""

    id: str = Field(description="local/<family>/<name>")
    name: str
    family: ModelType
    format: ModelFormat
    path: Path = Field(description="Directory of the servable HF-style checkpoint.")
    source: SourceKind
    source_ref: str = Field(description="Repo id, file path, Ollama reference or directory it came from.")
    revision: str | None = None
    size_bytes: int = Field(ge=0)
    architecture: str
    context_length: int = Field(ge=1)
    dtype: str
    capabilities: list[Capability]
    quantization: Quantization | None = Field(
        default=None, description="How the weights on disk are quantized; None: plain weights."
    )
    owned: bool = Field(
        default=True,
        description="True when the files live inside the store and are deleted with the record.",
    )
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Source metadata kept for reference (GGUF keys, Ollama params)."
    )

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities


_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


def validate_name(name: str) -> str:
    """Return ``name`` lower-cased, or raise if it could not be a safe directory name."""
    if not name or "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise InvalidModelNameError(
            f"invalid model name {name!r}: names may not be empty or contain '/', '\\' or '..'",
            param="name",
        )
    lowered = name.lower()
    if not _NAME.match(lowered):
        raise InvalidModelNameError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (at most 100), "
            "starting with a letter or digit",
            param="name",
        )
    return lowered


def model_id(family: ModelType, name: str) -> str:
    """Build the canonical id ``local/<family>/<name>`` after validating ``name``."""
    return f"local/{family.value}/{validate_name(name)}"


def parse_model_id(value: str) -> tuple[ModelType, str]:
    """Split and validate a ``local/<family>/<name>`` id."""
    parts = value.split("/")
    if len(parts) != 3 or parts[0] != "local":
        raise InvalidModelNameError(
            f"invalid model id {value!r}: expected 'local/<family>/<name>'", param="model"
        )
    try:
        family = ModelType(parts[1])
    except ValueError:
        families = ", ".join(t.value for t in ModelType)
        raise InvalidModelNameError(
            f"invalid model id {value!r}: unknown family {parts[1]!r} (one of {families})",
            param="model",
        ) from None
    return family, validate_name(parts[2])
