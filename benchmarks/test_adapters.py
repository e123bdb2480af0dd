"""The cost of LoRA adapters: training time per step, and serving throughput with adapters.

- ``finetune``: ``turnout models finetune`` on SmolLM2 with the Zubrowka data (``testkit/turnout_cli.py``),
  two CPU threads; seconds per optimiser step, from the trainer's own figures.
- ``serving``: one SmolLM2 replica, 32 clients, 96 streamed chat requests of 32 tokens each.
  ``base_lora_off``: the base alone on an engine without LoRA (what a user runs without adapters;
  the baseline). ``base_lora_on``: the base alone on an engine with ``max_loras: 2``.
  ``mixed``: the same engine, requests spread evenly over the base and two adapters (the trained
  one and a copy registered under a second name: two adapters to vLLM, each in its own slot).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from benchmarks.load import run_load
from engine.store.demo import SMOLLM2_ID
from engine.store.manager import LocalModelManager
from testkit.servers import turnout_beside
from testkit.turnout_cli import finetune, turnout, write_data

CONCURRENCY, REQUESTS, OUTPUT_TOKENS = 32, 96, 32
ADAPTERS = [f"{SMOLLM2_ID}:zubrowka", f"{SMOLLM2_ID}:zubrowka-copy"]


@pytest.fixture(scope="module")
def adapter_store(tmp_path_factory: pytest.TempPathFactory, demo_store: LocalModelManager) -> Path:
    root = tmp_path_factory.mktemp("bench-adapters")
    base = demo_store.get_model(SMOLLM2_ID)
    assert turnout(root, "models", "import", str(base.path), "--name", base.name).returncode == 0
    return root


@pytest.mark.timeout(1800)
def test_finetune(benchmark, adapter_store: Path) -> None:
    data = write_data(adapter_store / "zubrowka.jsonl")

    def run() -> None:
        result = finetune(adapter_store, SMOLLM2_ID, "zubrowka", data, "--threads", "2")
        assert result.returncode == 0, result.stderr[-2000:]

    benchmark.pedantic(run, rounds=1, iterations=1)
    record = LocalModelManager(adapter_store).adapters.get(ADAPTERS[0])
    figures = record.metadata
    benchmark.extra_info.update(
        suite="adapters_finetune", steps=int(figures["training.steps"]),
        seconds_per_step=float(figures["training.seconds_per_step"]), seconds=float(figures["training.seconds"]),
        final_loss=float(figures["training.final_loss"]),
    )


def _bodies(models: list[str]) -> list[dict]:
    return [
        {"model": models[i % len(models)], "messages": [{"role": "user", "content": f"Tell me about city number {i}."}],
         "max_tokens": OUTPUT_TOKENS, "min_tokens": OUTPUT_TOKENS, "ignore_eos": True, "temperature": 0.8,
         "stream": True, "stream_options": {"include_usage": True}}
        for i in range(REQUESTS)
    ]


def _ensure_adapters(root: Path) -> None:
    """The two adapters, trained and copied here unless test_finetune already did."""
    known = {a.id for a in LocalModelManager(root).adapters.list()}
    if ADAPTERS[0] not in known:
        result = finetune(root, SMOLLM2_ID, "zubrowka", write_data(root / "zubrowka.jsonl"), "--threads", "2")
        assert result.returncode == 0, result.stderr[-2000:]
    if ADAPTERS[1] not in known:
        path = LocalModelManager(root).adapters.get(ADAPTERS[0]).path
        copy = turnout(root, "models", "add-adapter", SMOLLM2_ID, str(path), "--name", "zubrowka-copy")
        assert copy.returncode == 0, copy.stderr


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("case", ["base_lora_off", "base_lora_on", "mixed"])
def test_serving(benchmark, case: str, adapter_store: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    _ensure_adapters(adapter_store)
    engine = {"cpu_threads_bind": "nobind"} | ({} if case == "base_lora_off" else {"max_loras": 2, "max_lora_rank": 8})
    config = {"models": [{"id": SMOLLM2_ID, "engine": engine}], "limits": {"first_token_timeout_s": 300},
              "response_cache": {"enabled": False}}
    models = [SMOLLM2_ID, *ADAPTERS] if case == "mixed" else [SMOLLM2_ID]
    with turnout_beside(config, tmp_path_factory.mktemp(case), adapter_store, timeout_s=900) as (_, base):
        url = f"{base}/v1/chat/completions"
        asyncio.run(run_load(url, _bodies(models)[:CONCURRENCY], CONCURRENCY))  # warm-up: adapters loaded
        result = benchmark.pedantic(lambda: asyncio.run(run_load(url, _bodies(models), CONCURRENCY)), rounds=1, iterations=1)
    summary = result.summary()
    assert summary["errors"] == 0, [r.error for r in result.requests if r.error][:3]
    benchmark.extra_info.update(
        suite="adapters_serving", case=case, models=json.dumps(models),
        **{k: summary[k] for k in ("requests", "output_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "wall_s")},
    )
