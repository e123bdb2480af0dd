"""Minimal checkpoint directories for unit tests of the store (no real weights needed there)."""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)


def write_checkpoint(
    path: Path,
    architecture: str = "LlamaForCausalLM",
    *,
    chat_template: str | None = CHAT_TEMPLATE,
    context: int = 2048,
    extra_config: dict | None = None,
) -> Path:
    """Write config.json, an (empty) weights file and tokenizer files into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": [architecture],
        "model_type": architecture.removesuffix("ForCausalLM").lower(),
        "max_position_embeddings": context,
        "torch_dtype": "bfloat16",
        **(extra_config or {}),
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(b"\0" * 16)
    tokenizer_config: dict = {"model_max_length": context}
    if chat_template:
        tokenizer_config["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (path / "tokenizer.json").write_text("{}")
    return path
