"""The real vLLM engine on the CPU with the demo models, through engine.runtime.LocalEngine.

The engines are the integration package's (tests/integration/conftest.py), shared with the
reference checks; the model records come from the session fixtures (tests/conftest.py). Tests and
engine fixtures share the session event loop: an engine's output handler runs on the loop of its
first request, and requests from any other loop fail.
"""

from __future__ import annotations

import asyncio
import json
import math

import jsonschema
import pytest

from engine.errors import ClientError
from engine.runtime import LocalEngine

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# Bounded on purpose: a random-weight model can only finish it if the grammar forces every token.
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "colour": {"type": "string", "enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 9},
        "urgent": {"type": "boolean"},
    },
    "required": ["colour", "count", "urgent"],
    "additionalProperties": False,
}


@pytest.fixture
def smollm2(smollm2_engine: LocalEngine) -> LocalEngine:
    return smollm2_engine


@pytest.fixture
def deepseek(deepseek_engine: LocalEngine) -> LocalEngine:
    return deepseek_engine


@pytest.fixture
def minilm(minilm_engine: LocalEngine) -> LocalEngine:
    return minilm_engine


async def test_smollm2_knows_the_capital_of_france(smollm2: LocalEngine) -> None:
    # Guards eager mode on the CPU: compiled mode answers this with nonsense.
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = await smollm2.chat(messages, max_tokens=32, temperature=0.0)
    assert "Paris" in answer.text
    assert answer.finish_reason == "stop"


async def test_deepseek_generates_exactly_the_requested_tokens(deepseek: LocalEngine) -> None:
    completion = await deepseek.complete("Once upon a time", max_tokens=23, ignore_eos=True)
    assert completion.num_tokens == 23
    assert completion.finish_reason == "length"


async def test_deepseek_output_follows_a_json_schema(deepseek: LocalEngine) -> None:
    messages = [{"role": "user", "content": "Describe a ticket as JSON."}]
    answer = await deepseek.chat(
        messages, max_tokens=200, temperature=1.0, seed=7, json_schema=ANSWER_SCHEMA
    )
    assert answer.finish_reason == "stop", answer.text
    jsonschema.validate(json.loads(answer.text), ANSWER_SCHEMA)


async def test_cancelling_the_caller_aborts_the_engine_request(deepseek: LocalEngine) -> None:
    task = asyncio.create_task(deepseek.complete("Tell", max_tokens=3000, ignore_eos=True))
    await _until(lambda: deepseek.num_unfinished_requests == 1)
    await asyncio.sleep(0.5)  # mid-decode: 3000 tokens take far longer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: deepseek.num_unfinished_requests == 0)


async def test_requests_the_engine_rejects_are_client_errors(deepseek: LocalEngine) -> None:
    with pytest.raises(ClientError, match="maximum context length is 4096"):
        await deepseek.complete("hello " * 5000, max_tokens=1)


async def test_minilm_embeddings_rank_related_words_closer(minilm: LocalEngine) -> None:
    king, queen, carburetor = await minilm.embed(["king", "queen", "carburetor"])
    assert len(king) == 384
    assert _cosine(king, queen) > _cosine(king, carburetor) + 0.2


async def _until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
