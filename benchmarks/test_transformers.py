"""The baseline without a serving engine: Hugging Face transformers ``generate``, one request at a
time, in-process, on the same SmolLM2 checkpoint, prompts and output length as the serving suite."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.conftest import OUTPUT_TOKENS, PROMPT_TOKENS
from engine.protocol import ModelRecord

REQUESTS = 4


@pytest.fixture(scope="module")
def hf_model(smollm2_record: ModelRecord):
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_record.path))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_record.path), dtype=torch.bfloat16).eval()
    yield tokenizer, model
    del model


def test_transformers_sequential(benchmark, hf_model, prompts: list[str]) -> None:
    tokenizer, model = hf_model

    def run() -> tuple[int, list[float]]:
        tokens, latencies = 0, []
        for prompt in prompts[:REQUESTS]:
            inputs = tokenizer(prompt, return_tensors="pt")
            started = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(
                    **inputs, max_new_tokens=OUTPUT_TOKENS, min_new_tokens=OUTPUT_TOKENS, do_sample=False,
                    pad_token_id=tokenizer.eos_token_id,
                )
            latencies.append(time.perf_counter() - started)
            tokens += out.shape[1] - inputs["input_ids"].shape[1]
        return tokens, latencies

    run_result = benchmark.pedantic(run, rounds=1, iterations=1)
    tokens, latencies = run_result
    wall = sum(latencies)
    benchmark.extra_info.update(
        suite="transformers", system="transformers", concurrency=1, requests=REQUESTS,
        prompt_tokens=PROMPT_TOKENS, output_tokens=tokens, wall_s=wall,
        output_tokens_per_s=tokens / wall, requests_per_s=REQUESTS / wall,
        latency_p50_s=sorted(latencies)[len(latencies) // 2], torch_threads=torch.get_num_threads(),
    )
    assert tokens == REQUESTS * OUTPUT_TOKENS
