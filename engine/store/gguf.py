"""GGUF files: read their metadata, and turn them into servable Hugging Face checkpoints.

The engine serves Hugging Face checkpoints, so a GGUF file is converted once, when it is added to
the store: the weights are dequantised to bf16 and the config, tokenizer and chat template are
rebuilt from the file's metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from engine.errors import ClientError, InvalidCheckpointError, InvalidModelNameError
from engine.patches.gguf_reader import one_parse_per_file
from engine.protocol import validate_name

logger = logging.getLogger(__name__)

_MAGIC = b"GGUF"
_UNQUANTIZED_FILE_TYPES = {"0", "1", "32"}  # general.file_type: F32, F16, BF16
# Arrays up to this many elements are kept (as JSON); longer ones (vocabularies, merges, scores) are
# summarised by their length.
_MAX_INLINE_ARRAY = 64
_HASH_CHUNK = 8 * 1024 * 1024

# GGUF architecture names that transformers' GGUF reader knows under another name.
_TRANSFORMERS_ARCH_ALIASES = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
}
# Keys of transformers' GGUF mapping that are metadata sections, not architectures.
_NOT_ARCHITECTURES = {"general", "tokenizer"}

# A trailing quantisation label in a file name: Q4_1, Q4_K_M, IQ2_XS, F16, BF16, FP32 ...
_QUANT_SUFFIX = re.compile(r"[._-](?:I?Q\d+(?:_[A-Z0-9]+)*|B?F(?:P)?(?:16|32)|FP8)$", re.IGNORECASE)
_UNSAFE_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")


def read_gguf_metadata(path: Path) -> dict[str, str]:
    """Read the metadata of the GGUF file at ``path``, flattened to strings.

    Strings are returned as they are, other scalars as JSON (``"8192"``, ``"false"``), short arrays
    as JSON lists and long ones (token lists, merges, scores) as ``"<array of N>"``.

    Raises :class:`InvalidCheckpointError` if the file is missing, is not a GGUF file, or is corrupt
    or truncated (including tensor data that runs past the end of the file).
    """
    reader = _open_reader(path)
    return {name: _flatten_field(field) for name, field in reader.fields.items()}


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict[str, str]:
    """Convert a GGUF model into a bf16 Hugging Face checkpoint in ``out_dir``.

    ``out_dir`` must be an existing, empty directory. It receives ``model.safetensors``,
    ``config.json`` (no quantization config, ``architectures`` set, dtype bfloat16),
    ``generation_config.json``, the tokenizer files with the file's chat template (as
    ``chat_template.jinja``), and ``gguf_metadata.json``: the GGUF metadata plus
    ``gguf.source_file`` and ``gguf.sha256``. That metadata dict is returned.

    Weights are dequantised one tensor at a time and cast to bf16 straight away, so the weights in
    memory are the bf16 model plus one float32 tensor. On error ``out_dir`` may hold partial
    files; the caller discards it. Raises :class:`InvalidCheckpointError` for unreadable files and for architectures
    that cannot be converted.
    """
    _check_out_dir(out_dir)
    started = time.monotonic()
    metadata = read_gguf_metadata(gguf_path)
    _check_convertible(gguf_path, metadata)
    logger.info("converting %s (%s) to %s", gguf_path, metadata["general.architecture"], out_dir)

    with one_parse_per_file():
        config = _load_config(gguf_path)
        model = _load_model(gguf_path, config)
        model.save_pretrained(out_dir)
        del model  # free the weights before the tokenizer is built
        _save_tokenizer(gguf_path, out_dir, metadata, config)

    metadata = {
        **metadata,
        "gguf.source_file": str(gguf_path.resolve()),
        "gguf.sha256": file_sha256(gguf_path),
    }
    (out_dir / "gguf_metadata.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    logger.info("converted %s in %.1f s", gguf_path.name, time.monotonic() - started)
    return metadata


def convert_gguf_kept(gguf_path: Path, out_dir: Path, keep_quantized: bool) -> dict[str, str]:
    """:func:`convert_gguf`, or with ``keep_quantized`` its int8 W8A8 copy (:mod:`engine.quantize.int8`).

    vLLM 0.32 has no GGUF loader on any platform, so GGUF's own block formats (Q8_0, Q4_K...)
    cannot be served as they are. Keeping a quantized file quantized therefore means: dequantise,
    then round the linear weights to int8 per output channel, a format vLLM serves on the CPU and
    on CUDA. Raises :class:`ClientError` for a GGUF whose weights are not quantized.
    """
    if not keep_quantized:
        return convert_gguf(gguf_path, out_dir)
    from engine.quantize.int8 import write_int8

    file_type = read_gguf_metadata(gguf_path).get("general.file_type")
    if file_type in _UNQUANTIZED_FILE_TYPES:
        raise ClientError(f"{gguf_path.name} is not quantized (file type {file_type}); import it without "
                          "--keep-quantized", param="keep_quantized")
    plain = out_dir / ".bf16"
    plain.mkdir()
    metadata = convert_gguf(gguf_path, plain)
    write_int8(plain, out_dir)
    shutil.rmtree(plain)
    return metadata | {"gguf.kept_quantized": "w8a8"}


def suggested_name(gguf_path: Path) -> str:
    """A store name derived from a GGUF file name, without its quantisation label.

    ``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct``.
    """
    stem = gguf_path.name
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    stem = _QUANT_SUFFIX.sub("", stem)
    name = _UNSAFE_NAME_CHARS.sub("-", stem.lower())
    name = re.sub(r"\.{2,}", ".", name).strip("._-")[:100].rstrip("._-")
    if not name:
        raise InvalidModelNameError(
            f"cannot derive a model name from {gguf_path.name!r}; pass a name explicitly", param="name"
        )
    return validate_name(name)


def _open_reader(path: Path) -> Any:
    from gguf import GGUFReader

    if not path.is_file():
        raise InvalidCheckpointError(f"GGUF file {path} does not exist or is not a file", param="path")
    try:
        with path.open("rb") as f:
            magic = f.read(len(_MAGIC))
    except OSError as e:
        raise InvalidCheckpointError(f"cannot read GGUF file {path}: {e.strerror}", param="path") from e
    if magic != _MAGIC:
        raise InvalidCheckpointError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)", param="path"
        )
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError, TypeError, MemoryError) as e:
        raise InvalidCheckpointError(f"{path} is a corrupt or truncated GGUF file: {e}", param="path") from e
    _check_complete(path, reader)
    return reader


def _check_complete(path: Path, reader: Any) -> None:
    size = path.stat().st_size
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=reader.data_offset)
    if end > size:
        raise InvalidCheckpointError(
            f"{path} is truncated: its tensors need {end} bytes but the file has {size}", param="path"
        )
    if "general.architecture" not in reader.fields:
        raise InvalidCheckpointError(f"{path} has no general.architecture metadata", param="path")


def _flatten_field(field: Any) -> str:
    from gguf import GGUFValueType

    if field.types and field.types[0] == GGUFValueType.ARRAY:
        if len(field.data) > _MAX_INLINE_ARRAY:
            return f"<array of {len(field.data)}>"
        return json.dumps(field.contents(), ensure_ascii=False)
    value = field.contents()
    return value if isinstance(value, str) else json.dumps(value)


def _check_out_dir(out_dir: Path) -> None:
    if not out_dir.is_dir():
        raise ValueError(f"output directory {out_dir} does not exist")
    if any(out_dir.iterdir()):
        raise ValueError(f"output directory {out_dir} is not empty")


def _check_convertible(path: Path, metadata: dict[str, str]) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if metadata.get("split.count", "1") not in ("0", "1"):
        raise InvalidCheckpointError(
            f"{path} is one part of a split GGUF model ({metadata['split.count']} parts); "
            "merge the parts into one file first (llama-gguf-split --merge)",
            param="path",
        )
    arch = metadata["general.architecture"]
    supported = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - _NOT_ARCHITECTURES)
    if _TRANSFORMERS_ARCH_ALIASES.get(arch, arch) not in supported:
        raise InvalidCheckpointError(
            f"GGUF architecture {arch!r} of {path.name} is not supported for conversion "
            f"(supported: {', '.join(supported)})",
            param="path",
        )


def _load_config(gguf_path: Path) -> Any:
    import torch
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except (ValueError, KeyError, OSError) as e:
        raise InvalidCheckpointError(f"cannot build a model config from {gguf_path.name}: {e}") from e
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise InvalidCheckpointError(
            f"{gguf_path.name} holds a {config.model_type!r} model, which is not a causal language "
            "model and cannot be served for chat or completions",
            param="path",
        )
    config.dtype = torch.bfloat16
    # The weights are dense now; and general.name (read as `_model_name_or_path`) belongs in
    # gguf_metadata.json, not in the config as if it were where the checkpoint came from.
    for attribute in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    return config


def _load_model(gguf_path: Path, config: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    # Built on the meta device: the dequantised tensors are assigned in place, never copied.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    config.architectures = [type(model).__name__]
    started = time.monotonic()
    try:
        parsed = load_gguf_checkpoint(
            str(gguf_path), return_tensors=True, model_to_load=model, torch_dtype=torch.bfloat16
        )
    except (ValueError, KeyError, NotImplementedError) as e:
        raise InvalidCheckpointError(f"cannot dequantise the weights of {gguf_path.name}: {e}") from e
    logger.info("dequantised %d tensors in %.1f s", len(parsed["tensors"]), time.monotonic() - started)
    missing, unexpected = model.load_state_dict(parsed["tensors"], strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or ()) if config.tie_word_embeddings else set()
    missing = sorted(set(missing) - tied)
    if missing or unexpected:
        raise InvalidCheckpointError(
            f"{gguf_path.name} does not match its architecture {type(model).__name__}: "
            f"missing weights {missing[:5]}, unexpected weights {sorted(unexpected)[:5]}",
            param="path",
        )
    model.tie_weights()
    return model


def _save_tokenizer(gguf_path: Path, out_dir: Path, metadata: dict[str, str], config: Any) -> None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except (ValueError, KeyError, OSError) as e:
        raise InvalidCheckpointError(f"cannot rebuild the tokenizer of {gguf_path.name}: {e}") from e
    template = metadata.get("tokenizer.chat_template")
    if template and not tokenizer.chat_template:
        tokenizer.chat_template = template
    context_length = getattr(config, "max_position_embeddings", None)
    if isinstance(context_length, int) and context_length > 0:
        tokenizer.model_max_length = context_length
    tokenizer.save_pretrained(out_dir)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
