"""Write tiny, seeded, randomly initialised DeepSeek checkpoints.

- V3 (:func:`write_tiny_deepseek_v3`): the real architecture (MLA attention with a compressed
  query, a shared expert plus routed experts with sigmoid ``noaux_tc`` group routing, dense first
  layer);
- V2-Lite-style (:func:`write_tiny_deepseek_v2_lite`): MLA without ``q_lora_rank`` (a full query
  projection, as DeepSeek-V2-Lite) and softmax ``greedy`` routing.

Both load in seconds on a CPU. Their weights are random, so they produce noise text: they exercise
the serving path for the DeepSeek family (MLA kernels, MoE routing, structured output) and can be
checked token by token against transformers' own implementation, but do not answer questions.

Usage: ``python -m engine.store.tiny_deepseek OUT_DIR --tokenizer DIR [--seed N] [--variant v2-lite]``
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from engine.errors import InvalidCheckpointError, TurnoutError

# vLLM's CPU MLA backend supports only the latent head size of the real models: 512 + 64 = 576.
KV_LORA_RANK = 512
QK_ROPE_HEAD_DIM = 64

_ARCHITECTURE = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "first_k_dense_replace": 1,
    "intermediate_size": 512,
    "moe_intermediate_size": 128,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 2,
    "topk_group": 1,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "q_lora_rank": 128,
    "kv_lora_rank": KV_LORA_RANK,
    "qk_rope_head_dim": QK_ROPE_HEAD_DIM,
    "qk_nope_head_dim": 64,
    "v_head_dim": 64,
    "max_position_embeddings": 4096,
    "num_mtp_layers": 0,
    "tie_word_embeddings": False,
}

# DeepSeek-V2-Lite's shape, shrunk: no q_lora_rank (full query projection), softmax greedy routing.
_V2_LITE_ARCHITECTURE = {
    **{k: v for k, v in _ARCHITECTURE.items() if k != "num_mtp_layers"},
    "n_group": 1,
    "topk_group": 1,
    "q_lora_rank": None,
    "routed_scaling_factor": 1.0,
    "norm_topk_prob": False,
    "topk_method": "greedy",
}

# Keys that real DeepSeek-V3 configs carry but transformers' DeepseekV3Config does not write;
# without them vLLM does not create (and then fails to load) `mlp.gate.e_score_correction_bias`.
_VLLM_ROUTING_KEYS = {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


def write_tiny_deepseek_v3(
    out_dir: Path, tokenizer_dir: Path, seed: int = 0, initializer_range: float = 0.02
) -> None:
    """Write a servable DeepSeek-V3 checkpoint (bf16 safetensors, ~30M parameters) to ``out_dir``.

    The tokenizer and chat template are copied from ``tokenizer_dir`` (a Hugging Face checkpoint
    directory with tokenizer files) and the vocabulary size follows it. The same ``seed`` always
    gives the same weights. ``initializer_range`` is the weights' standard deviation: at
    transformers' default (0.02) attention barely moves the logits of so small a model; larger
    values make its output depend on every kernel, for checks against a reference. Raises :class:`InvalidCheckpointError` when ``tokenizer_dir`` holds no
    usable tokenizer.
    """
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    architecture = {**_ARCHITECTURE, "initializer_range": initializer_range}
    _write(out_dir, tokenizer_dir, seed, DeepseekV3Config, DeepseekV3ForCausalLM, architecture)
    _add_routing_keys(out_dir / "config.json", _VLLM_ROUTING_KEYS)


def write_tiny_deepseek_v2_lite(
    out_dir: Path, tokenizer_dir: Path, seed: int = 0, initializer_range: float = 0.02
) -> None:
    """Write a V2-Lite-style checkpoint (MLA without ``q_lora_rank``) to ``out_dir``.

    The same contract as :func:`write_tiny_deepseek_v3`.
    """
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

    architecture = {**_V2_LITE_ARCHITECTURE, "initializer_range": initializer_range}
    _write(out_dir, tokenizer_dir, seed, DeepseekV2Config, DeepseekV2ForCausalLM, architecture)
    _add_routing_keys(out_dir / "config.json", {"scoring_func": "softmax", "topk_method": "greedy"})


def _write(
    out_dir: Path, tokenizer_dir: Path, seed: int, config_cls: Any, model_cls: Any,
    architecture: dict[str, Any],
) -> None:
    import torch

    tokenizer = _load_tokenizer(tokenizer_dir)
    config = config_cls(**architecture, **_token_ids(tokenizer))
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    _copy_tokenizer(tokenizer_dir, out_dir)


def _load_tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    if not (tokenizer_dir / "tokenizer.json").is_file() and not (
        tokenizer_dir / "tokenizer.model"
    ).is_file():
        raise InvalidCheckpointError(
            f"{tokenizer_dir} has no tokenizer.json or tokenizer.model", param="tokenizer"
        )
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except (OSError, ValueError) as e:
        raise InvalidCheckpointError(
            f"cannot load the tokenizer in {tokenizer_dir}: {e}", param="tokenizer"
        ) from e


def _token_ids(tokenizer: Any) -> dict[str, Any]:
    eos = tokenizer.eos_token_id
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    }


def _add_routing_keys(config_file: Path, keys: dict[str, str]) -> None:
    config = json.loads(config_file.read_text())
    config.update(keys)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _copy_tokenizer(tokenizer_dir: Path, out_dir: Path) -> None:
    for name in _TOKENIZER_FILES:
        source = tokenizer_dir / name
        if source.is_file():
            shutil.copyfile(source, out_dir / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m engine.store.tiny_deepseek",
        description="Write a tiny random DeepSeek checkpoint for tests.",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write the checkpoint to")
    parser.add_argument(
        "--tokenizer", type=Path, required=True, help="checkpoint directory with the tokenizer"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    parser.add_argument("--variant", choices=["v3", "v2-lite"], default="v3", help="architecture")
    args = parser.parse_args(argv)
    write = write_tiny_deepseek_v3 if args.variant == "v3" else write_tiny_deepseek_v2_lite
    try:
        write(args.out_dir, args.tokenizer, seed=args.seed)
    except TurnoutError as e:
        parser.error(e.message)


if __name__ == "__main__":
    main()
