"""What a model family needs of its engine: DeepSeek's MLA and MoE configuration checked, and the
reasoning parser of R1-style models."""

from __future__ import annotations

from typing import Any

from engine.checks.attention_paths import MLA_ARCHS, is_mla
from engine.errors import ConfigError
from engine.launch.settings import EngineSettings, Platform
from engine.protocol import Capability, ModelRecord, ModelType
from engine.store.checkpoint import read_config

REASONING_PARSER = "deepseek_r1"
CPU_MLA_LATENT_SIZE = 576  # the only MLA latent size vLLM's CPU backend supports (512 + 64)


def _mla_config(record: ModelRecord) -> dict[str, Any] | None:
    """The checkpoint's config.json when it is a DeepSeek V2/V3 (MLA) model, else None."""
    if record.family is not ModelType.DEEPSEEK and record.architecture not in MLA_ARCHS:
        return None
    config = read_config(record.path)
    return config if is_mla(config) else None  # else an R1 distill: Llama or Qwen2, no MLA


def check_deepseek(record: ModelRecord, platform: Platform) -> None:
    config = _mla_config(record)
    if config is None:
        return
    if config.get("model_type") == "deepseek_v3" and not (
        config.get("topk_method") and config.get("scoring_func")
    ):
        raise ConfigError(
            f"{record.id}: a DeepSeek-V3 config.json must name topk_method ('noaux_tc') and "
            "scoring_func ('sigmoid') as the released configs do; without them vLLM cannot load "
            "mlp.gate.e_score_correction_bias",
            param="model",
        )
    if config.get("n_routed_experts") and not all(
        isinstance(config.get(key), int) for key in ("n_group", "topk_group")
    ):
        raise ConfigError(
            f"{record.id}: a DeepSeek MoE config.json must give n_group and topk_group as numbers "
            "(1 and 1 for no group-limited routing, as DeepSeek-V2-Lite's does); vLLM's MoE "
            "router fails on the first request without them",
            param="model",
        )
    rank, rope = config.get("kv_lora_rank"), config.get("qk_rope_head_dim", 0)
    if platform is Platform.CPU and rank is not None and rank + rope != CPU_MLA_LATENT_SIZE:
        raise ConfigError(
            f"{record.id}: MLA latent size kv_lora_rank + qk_rope_head_dim = {rank} + {rope} = "
            f"{rank + rope}, but vLLM's CPU MLA backend supports only {CPU_MLA_LATENT_SIZE} "
            "(512 + 64, as in DeepSeek-V2/V3/R1); serve it on CUDA",
            param="model",
        )


def reasoning_parser(
    record: ModelRecord, settings: EngineSettings, *, embedding: bool
) -> str | None:
    wanted = settings.reasoning
    if not (record.has(Capability.REASONING) if wanted is None else wanted):
        return None
    if embedding:
        raise ConfigError(f"{record.id} is an embedding model; it cannot reason", param="reasoning")
    tokenizer = record.path / "tokenizer.json"
    text = tokenizer.read_text(errors="ignore") if tokenizer.is_file() else ""
    if '"<think>"' not in text or '"</think>"' not in text:
        raise ConfigError(
            f"{record.id}: the {REASONING_PARSER} reasoning parser needs <think> and </think> "
            "tokens, which the tokenizer lacks",
            param="reasoning",
        )
    return REASONING_PARSER
