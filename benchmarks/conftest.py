"""Benchmark fixtures: the load shape, seeded prompts, and one running system per module.

The demo models come from the test suite's session fixtures (tests/conftest.py).

The load shape can be changed from the environment (e.g. a quick look with
``TURNOUT_BENCH_CONCURRENCY=1,4`` or ``TURNOUT_BENCH_SYSTEMS=turnout``); the defaults are the
published ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from transformers import AutoTokenizer

from benchmarks.load import make_prompts
from benchmarks.systems import STARTERS, System
from engine.protocol import ModelRecord
from testkit.demo_models import demo_store, minilm_record, smollm2_record  # noqa: F401 - the demo models

CONCURRENCY = [int(c) for c in os.environ.get("TURNOUT_BENCH_CONCURRENCY", "1,4,16,32").split(",")]
PROMPT_TOKENS = int(os.environ.get("TURNOUT_BENCH_PROMPT_TOKENS", "128"))
OUTPUT_TOKENS = int(os.environ.get("TURNOUT_BENCH_OUTPUT_TOKENS", "64"))
SERVING_SYSTEMS = os.environ.get("TURNOUT_BENCH_SYSTEMS", "vllm,rayllm,rayllm_ht,turnout").split(",")
# Rounds of every system, one after another; the targets take each figure's median over them.
ROUNDS = int(os.environ.get("TURNOUT_BENCH_ROUNDS", "3"))
TARGET_CONCURRENCY = (1, 32)  # the points the targets read; later rounds measure only these


def serving_params() -> list[tuple[str, int]]:
    """(``system@round``, concurrency) in run order: every system in round 1, then round 2, ..."""
    return [
        (f"{system}@{round_}", c)
        for round_ in range(1, ROUNDS + 1)
        for system in SERVING_SYSTEMS
        for c in CONCURRENCY
        if round_ == 1 or c in TARGET_CONCURRENCY
    ]


def requests_at(concurrency: int) -> int:
    """Requests per load point: two per client, at least eight."""
    return max(2 * concurrency, 8)


@pytest.fixture(scope="session")
def prompts(smollm2_record: ModelRecord) -> list[str]:  # noqa: F811 - the imported fixture
    """Seeded prompts of PROMPT_TOKENS tokens, enough for the largest load point."""
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_record.path))
    return make_prompts(tokenizer, requests_at(max(CONCURRENCY)), PROMPT_TOKENS)


@pytest.fixture(scope="module")
def system(request: pytest.FixtureRequest, smollm2_record: ModelRecord, tmp_path_factory) -> Iterator[System]:  # noqa: F811
    """One serving system with SmolLM2 (``name`` or ``name@round``), started for the tests that
    use it and stopped after them."""
    name = request.param.split("@")[0]
    with STARTERS[name](smollm2_record, tmp_path_factory.mktemp(name)) as running:
        yield running


@pytest.fixture(scope="module")
def embedding_system(request: pytest.FixtureRequest, minilm_record: ModelRecord, tmp_path_factory) -> Iterator[System]:  # noqa: F811
    """One serving system with MiniLM."""
    with STARTERS[request.param](minilm_record, tmp_path_factory.mktemp(f"embed-{request.param}")) as running:
        yield running
