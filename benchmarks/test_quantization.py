"""What quantizing SmolLM2 costs and saves: memory, tok/s and quality against bf16, one run.

The bf16 model is scored once (:mod:`engine.quantize.quality`: 64 chat prompts answered with 64 greedy
tokens at 32 at once, 16 plain texts for the log-likelihood), then each quantized version is
scored against it on an engine of its own, one after the other:

- ``int8_at_load``: ``quantization: int8`` (Turnout's W8A8 copy, round-to-nearest);
- ``w8a8``, ``w4a16``: ``turnout models quantize`` (llm-compressor GPTQ on the shipped
  calibration texts).

Weights are the safetensors bytes each engine loads; RSS the engine worker's resident memory.
"""

from __future__ import annotations

import asyncio

import pytest

from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings, Platform
from engine.quantize.quality import ModelScore, QualitySet, comparison, score_model
from engine.quantize.tool import PYTHON_ENV, tool_python
from engine.runtime import LocalEngine
from engine.store.demo import SMOLLM2_ID
from engine.store.manager import LocalModelManager
from testkit.turnout_cli import turnout

CASES = {"int8_at_load": (SMOLLM2_ID, "int8"), "w8a8": (f"{SMOLLM2_ID}-w8a8", None),
         "w4a16": (f"{SMOLLM2_ID}-w4a16", None)}
THREADS = "0-1"


@pytest.fixture(scope="module")
def quant_store(tmp_path_factory: pytest.TempPathFactory, demo_store: LocalModelManager) -> LocalModelManager:
    """SmolLM2 registered in place, and its two llm-compressor versions."""
    root = tmp_path_factory.mktemp("bench-quant")
    base = demo_store.get_model(SMOLLM2_ID)
    assert turnout(root, "models", "import", str(base.path), "--name", base.name).returncode == 0
    tool = {PYTHON_ENV: str(tool_python(demo_store.root))}  # llm-compressor's environment: one per machine
    for scheme in ("w8a8", "w4a16"):
        done = turnout(root, "models", "quantize", SMOLLM2_ID, "--scheme", scheme, timeout_s=1800, env=tool)
        assert done.returncode == 0, done.stderr[-3000:]
    return LocalModelManager(root)


async def _score(store: LocalModelManager, model_id: str, scheme: str | None, qset: QualitySet,
                 reference: ModelScore | None) -> ModelScore:
    record = store.get_model(model_id)
    launch = build_engine_args(record, EngineSettings(quantization=scheme, cpu_threads_bind=THREADS),
                               Platform.CPU, store.root)
    async with await LocalEngine.start(launch) as engine:
        return await score_model(engine, qset, model=model_id, size_bytes=record.size_bytes, reference=reference)


@pytest.fixture(scope="module")
def bf16(quant_store: LocalModelManager) -> tuple[QualitySet, ModelScore]:
    qset = QualitySet.load(quant_store.get_model(SMOLLM2_ID).path)
    return qset, asyncio.run(_score(quant_store, SMOLLM2_ID, None, qset, None))


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("case", list(CASES))
def test_quantized(benchmark, case: str, quant_store: LocalModelManager, bf16) -> None:
    qset, source = bf16
    model_id, scheme = CASES[case]
    scores: list[ModelScore] = []
    benchmark.pedantic(lambda: scores.append(asyncio.run(_score(quant_store, model_id, scheme, qset, source))),
                       rounds=1, iterations=1)
    result = comparison(source, scores[0])
    benchmark.extra_info.update(
        suite="quantization", case=case, model=model_id, source_tokens_per_s=source.tokens_per_s,
        source_weights_bytes=source.weights_bytes, source_rss_bytes=source.rss_bytes,
        **{k: v for k, v in result.items() if k not in ("source", "model")},
        tokens_per_s=scores[0].tokens_per_s, weights_bytes=scores[0].weights_bytes, rss_bytes=scores[0].rss_bytes,
        source_mean_logprob=source.mean_logprob, mean_logprob=scores[0].mean_logprob,
    )
