"""What Turnout's CPU kernel choice costs: engine throughput on each attention path of this CPU.

The in-process engine (no serving layers) with SmolLM2 decodes SEQUENCES sequences of
OUTPUT_TOKENS tokens at once, engine threads on core 0, on:

- ``portable`` (Turnout's default): vLLM's ``vec`` attention, no AMX kernels of vLLM's own;
- ``vllm``: vLLM's own choice; on a CPU with AMX that is the ``amx`` attention ISA, which gives
  wrong answers for bf16 (measured for speed only); without AMX it is the same path as
  ``portable`` and is reported as n/a;
- ``float32``: the other correct way out on AMX CPUs (vLLM's AMX attention is bf16 only).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from benchmarks.conftest import OUTPUT_TOKENS, PROMPT_TOKENS
from engine.launch.cpu import cpu_features
from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings
from engine.protocol import ModelRecord
from engine.runtime import LocalEngine

SEQUENCES = 32
PATHS = {
    "portable": EngineSettings(cpu_threads_bind="0"),
    "vllm": EngineSettings(cpu_threads_bind="0", cpu_kernels="vllm"),
    "float32": EngineSettings(cpu_threads_bind="0", dtype="float32"),
}


def _attention_isa(path: str) -> str:
    if path == "float32":
        return "vec (fp32)"
    return "amx" if path == "vllm" and cpu_features().has_amx else "vec"


async def _throughput(record: ModelRecord, settings: EngineSettings, prompt_ids: list[list[int]]) -> tuple[int, float]:
    async with await LocalEngine.start(build_engine_args(record, settings)) as engine:
        await engine.complete_ids(prompt_ids[0], max_tokens=4)  # warm-up
        started = time.perf_counter()
        done = await asyncio.gather(
            *(engine.complete_ids(p, max_tokens=OUTPUT_TOKENS, ignore_eos=True) for p in prompt_ids)
        )
        return sum(d.num_tokens for d in done), time.perf_counter() - started


@pytest.mark.parametrize("path", list(PATHS))
def test_cpu_kernel_paths(benchmark, smollm2_record: ModelRecord, prompts: list[str], path: str) -> None:
    from transformers import AutoTokenizer

    features = cpu_features()
    info = {"suite": "cpu_kernels", "path": path, "attention_isa": _attention_isa(path),
            "cpu_features": ",".join(features.names()), "sequences": SEQUENCES}
    if path == "vllm" and not features.has_amx:
        benchmark.extra_info.update(info, output_tokens_per_s=None, note="no AMX: same path as portable")
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
        return
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_record.path))
    prompt_ids = [tokenizer(p)["input_ids"][:PROMPT_TOKENS] for p in prompts[:SEQUENCES]]
    tokens, wall = benchmark.pedantic(
        lambda: asyncio.run(_throughput(smollm2_record, PATHS[path], prompt_ids)), rounds=1, iterations=1
    )
    benchmark.extra_info.update(info, output_tokens_per_s=tokens / wall, wall_s=wall, output_tokens=tokens)
    assert tokens == SEQUENCES * OUTPUT_TOKENS
