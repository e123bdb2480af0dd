"""Write a tiny, seeded, randomly initialised DeepSeek-V3 checkpoint.

The model has the real architecture (MLA attention, a shared expert plus routed experts with
sigmoid ``noaux_tc`` routing, dense first layer) at a size that loads in seconds on a CPU. Its
weights are random, so it produces noise text: it exists to exercise the serving path for the
DeepSeek family (MLA kernels, MoE routing, structured output), not to answer questions.

Usage: ``python -m engine.tiny_deepseek OUT_DIR --tokenizer DIR [--seed N]``
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


def write_tiny_deepseek_v3(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> None:
    """Write a servable DeepSeek-V3 checkpoint (bf16 safetensors, ~30M parameters) to ``out_dir``.

    The tokenizer and chat template are copied from ``tokenizer_dir`` (a Hugging Face checkpoint
    directory with tokenizer files) and the vocabulary size follows it. The same ``seed`` always
    gives the same weights. Raises :class:`InvalidCheckpointError` when ``tokenizer_dir`` holds no
    usable tokenizer.
    """
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    tokenizer = _load_tokenizer(tokenizer_dir)
    config = DeepseekV3Config(**_ARCHITECTURE, **_token_ids(tokenizer))
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = DeepseekV3ForCausalLM(config).to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    _add_routing_keys(out_dir / "config.json")
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


def _add_routing_keys(config_file: Path) -> None:
    config = json.loads(config_file.read_text())
    config.update(_VLLM_ROUTING_KEYS)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _copy_tokenizer(tokenizer_dir: Path, out_dir: Path) -> None:
    for name in _TOKENIZER_FILES:
        source = tokenizer_dir / name
        if source.is_file():
            shutil.copyfile(source, out_dir / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m engine.tiny_deepseek",
        description="Write a tiny random DeepSeek-V3 checkpoint for tests.",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write the checkpoint to")
    parser.add_argument(
        "--tokenizer", type=Path, required=True, help="checkpoint directory with the tokenizer"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    args = parser.parse_args(argv)
    try:
        write_tiny_deepseek_v3(args.out_dir, args.tokenizer, seed=args.seed)
    except TurnoutError as e:
        parser.error(e.message)


if __name__ == "__main__":
    main()
