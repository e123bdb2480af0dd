"""Read a Hugging Face-style checkpoint directory: validate it, detect its family and capabilities.

This is the one place that decides what a checkpoint *is*; every source (hub, GGUF, Ollama, path)
ends in a directory that goes through :func:`inspect_checkpoint` before it is registered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import InvalidCheckpointError
from engine.protocol import Capability, CheckpointInfo, ModelFormat, ModelType
from engine.quantize.schemes import detect as detect_quantization

_DEEPSEEK_ARCHS = {"DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "DeepseekForCausalLM"}
_LLAMA_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM"}
_EMBEDDING_ARCHS = {"BertModel", "XLMRobertaModel", "RobertaModel", "MPNetModel", "NomicBertModel"}
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "tokenizer_config.json")


def read_config(path: Path) -> dict[str, Any]:
    """Return the parsed ``config.json`` of a checkpoint directory, or raise a clear error."""
    if not path.is_dir():
        raise InvalidCheckpointError(f"{path} is not a directory", param="path")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InvalidCheckpointError(
            f"{path} has no config.json: not a Hugging Face checkpoint directory", param="path"
        )
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidCheckpointError(f"{config_file} is not valid JSON: {e}", param="path") from e
    if not isinstance(config, dict):
        raise InvalidCheckpointError(f"{config_file} must hold a JSON object", param="path")
    return config


def detect_family(config: dict[str, Any], name: str, path: Path) -> ModelType:
    """Family from the architecture; R1 distills (Qwen2/Llama) count as DeepSeek by name."""
    arch = _architecture(config)
    if arch in _DEEPSEEK_ARCHS or "deepseek" in name.lower():
        return ModelType.DEEPSEEK
    if arch in _EMBEDDING_ARCHS or (path / "modules.json").is_file():
        return ModelType.EMBEDDING
    if arch in _LLAMA_ARCHS:
        return ModelType.LLAMA
    return ModelType.CUSTOM


def inspect_checkpoint(
    path: Path, *, name: str, family: ModelType | None = None
) -> CheckpointInfo:
    """Validate the checkpoint at ``path`` and describe it.

    ``name`` helps detection (DeepSeek-R1 distills, guard models); ``family`` overrides detection.
    Raises :class:`InvalidCheckpointError` when the directory cannot be served.
    """
    config = read_config(path)
    weights_format = _weights_format(path)
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise InvalidCheckpointError(f"{path} has no tokenizer files", param="path")
    detected = detect_family(config, name, path)
    chosen = family or detected
    return CheckpointInfo(
        architecture=_architecture(config),
        model_type=str(config.get("model_type", "unknown")),
        family=chosen,
        format=weights_format,
        context_length=_context_length(config, path),
        dtype=str(config.get("torch_dtype") or config.get("dtype") or "auto"),
        size_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        capabilities=_capabilities(config, path, name, embedding=detected == ModelType.EMBEDDING),
        quantization=detect_quantization(config),
    )


def _architecture(config: dict[str, Any]) -> str:
    archs = config.get("architectures") or []
    if not archs or not isinstance(archs, list):
        return "unknown"
    return str(archs[0])


def _weights_format(path: Path) -> ModelFormat:
    if any(path.glob("*.safetensors")):
        return ModelFormat.SAFETENSORS
    if any(path.glob("*.bin")):
        return ModelFormat.PYTORCH
    raise InvalidCheckpointError(
        f"{path} has no weights (*.safetensors or *.bin)", param="path"
    )


def _context_length(config: dict[str, Any], path: Path) -> int:
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    for key in _CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    raise InvalidCheckpointError(
        f"{path}/config.json names no context length ({', '.join(_CONTEXT_KEYS)})", param="path"
    )


def chat_template(path: Path) -> str | None:
    """The checkpoint's chat template, from chat_template.jinja or tokenizer_config.json."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    tokenizer_config = path / "tokenizer_config.json"
    if not tokenizer_config.is_file():
        return None
    template = json.loads(tokenizer_config.read_text()).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def _has_think_tokens(path: Path) -> bool:
    tokenizer = path / "tokenizer.json"
    if not tokenizer.is_file():
        return False
    text = tokenizer.read_text(errors="ignore")
    return '"<think>"' in text and '"</think>"' in text


def _capabilities(
    config: dict[str, Any], path: Path, name: str, *, embedding: bool
) -> list[Capability]:
    if embedding:
        return [Capability.EMBEDDINGS]
    caps = [Capability.COMPLETION, Capability.JSON_SCHEMA]
    template = chat_template(path)
    if template:
        # Any chat model can answer a moderation request under a constrained JSON schema.
        caps += [Capability.CHAT, Capability.MODERATION]
        if "tools" in template:
            caps.append(Capability.TOOLS)
    if _has_think_tokens(path) and ("r1" in name.lower() or "reason" in name.lower()):
        caps.append(Capability.REASONING)
    return sorted(caps, key=list(Capability).index)
