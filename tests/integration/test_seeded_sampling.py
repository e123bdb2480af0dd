"""Seeded sampling on vLLM's CPU engine (engine.patches.seeded_sampling): a long seeded prompt, prefilled
in several chunks, used to kill the engine (``CPU Generator does not use offset``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings
from engine.protocol import ModelRecord
from engine.runtime import LocalEngine

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
STORY = [{"role": "user", "content": "Tell me about the history of Paris. " * 40 + "Go on."}]  # ~400 tokens


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def chunked(smollm2_record: ModelRecord) -> AsyncIterator[LocalEngine]:
    """SmolLM2 prefilling at most 64 tokens per step: every prompt here takes several chunks."""
    settings = EngineSettings(max_model_len=2048, kv_cache_memory_bytes=128 * 1024 * 1024,
                              engine_args={"max_num_batched_tokens": 64, "enable_chunked_prefill": True})
    async with await LocalEngine.start(build_engine_args(smollm2_record, settings)) as engine:
        yield engine


async def test_a_long_seeded_prompt_is_answered_the_same_each_time(chunked: LocalEngine) -> None:
    first = await chunked.chat(STORY, max_tokens=12, temperature=0.8, seed=5)
    second = await chunked.chat(STORY, max_tokens=12, temperature=0.8, seed=5)
    other = await chunked.chat(STORY, max_tokens=12, temperature=0.8, seed=6)
    assert first.text and first.text == second.text
    assert other.text != first.text  # the seed, not greedy decoding, fixed the answer
    # the engine is alive and right afterwards
    answer = await chunked.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=32)
    assert "Paris" in answer.text
