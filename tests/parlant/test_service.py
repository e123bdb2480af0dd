"""TurnoutNLPService against the real demo graph: every method Parlant calls."""

from __future__ import annotations

import math

import pytest
from parlant.core.common import DefaultBaseModel
from parlant.core.nlp.moderation import CustomerModerationContext
from parlant.core.nlp.service import ModelSize
from turnout_parlant import (
    DeepSeekService,
    LlamaService,
    TurnoutNLPService,
    TurnoutTokenizer,
)
from turnout_parlant.moderation import tags_of
from turnout_parlant.service import routed_model

from tests.parlant.conftest import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID

pytestmark = pytest.mark.e2e


class Capital(DefaultBaseModel):
    country: str
    capital: str


class Verdict(DefaultBaseModel):
    approved: bool


CAPITAL_PROMPT = "What is the capital of France? Answer in JSON with the country and its capital."


async def test_initialize_reads_the_backend_models(service: TurnoutNLPService) -> None:
    assert service.model == SMOLLM2_ID
    assert {SMOLLM2_ID, DEEPSEEK_ID, MINILM_ID} <= set(service.resolved.catalog.ids)
    assert service.embedder.card.id == MINILM_ID
    assert service.embedder.dimensions == 384
    assert service.embedder.max_tokens == service.resolved.catalog.get(MINILM_ID).context_length


async def test_schematic_generation_validates_into_the_schema(service: TurnoutNLPService) -> None:
    generator = await service.get_schematic_generator(Capital)
    result = await generator.generate(CAPITAL_PROMPT, {"temperature": 0.0})
    assert isinstance(result.content, Capital)
    assert "paris" in result.content.capital.lower()
    assert result.info.schema_name == "Capital"
    assert result.info.model == SMOLLM2_ID
    assert result.info.duration > 0
    assert result.info.usage.input_tokens > 10 and result.info.usage.output_tokens > 3
    assert generator.max_tokens == service.resolved.catalog.get(SMOLLM2_ID).context_length


async def test_temperature_zero_is_deterministic(service: TurnoutNLPService) -> None:
    generator = await service.get_schematic_generator(Capital)
    first, second = [await generator.generate(CAPITAL_PROMPT, {"temperature": 0.0}) for _ in range(2)]
    assert first.content == second.content


async def test_streaming_text_generation(service: TurnoutNLPService) -> None:
    assert service.supports_streaming
    generator = await service.get_streaming_text_generator()
    result = generator.generate("What is the capital of France?", {"temperature": 0.0})
    with pytest.raises(RuntimeError):
        result.info
    chunks = [chunk async for chunk in result.stream]
    assert chunks[-1] is None and len(chunks) > 2
    assert "Paris" in "".join(c for c in chunks if c)
    assert result.info.model == SMOLLM2_ID
    assert result.info.usage.output_tokens > 0 and result.info.usage.input_tokens > 0


async def test_embedder_ranks_related_words_closer(service: TurnoutNLPService) -> None:
    embedder = await service.get_embedder()
    king, queen, carburetor = (await embedder.embed(["king", "queen", "carburetor"])).vectors
    assert len(king) == embedder.dimensions
    assert _cosine(king, queen) > _cosine(king, carburetor) + 0.2


async def test_tokenizer_counts_with_the_backend_tokenizer(service: TurnoutNLPService) -> None:
    generator = await service.get_schematic_generator(Capital)
    tokenizer = generator.tokenizer
    assert isinstance(tokenizer, TurnoutTokenizer) and tokenizer.model_id == SMOLLM2_ID
    reply = await service.client.post("/tokenize", {"model": SMOLLM2_ID, "prompt": CAPITAL_PROMPT})
    assert await tokenizer.estimate_token_count(CAPITAL_PROMPT) == len(reply.body["tokens"]) > 5
    assert await service.embedder.tokenizer.estimate_token_count("hello world") > 0


async def test_moderation_maps_onto_parlant_tags(service: TurnoutNLPService) -> None:
    moderation = await service.get_moderation_service()
    check = await moderation.moderate_customer(
        CustomerModerationContext(session=None, message="Hello, can you help me book a table?")  # type: ignore[arg-type]
    )
    assert set(check.tags) <= {"jailbreak", "harassment", "hate", "illicit", "self-harm", "sexual", "violence"}
    assert check.flagged == bool(check.tags)


def test_moderation_categories_become_parlant_tags() -> None:
    result = {"categories": {"hate/threatening": True, "violence": True, "sexual": False, "other": True}}
    assert tags_of(result) == ["hate", "violence"]


async def test_size_hints_become_router_aliases(turnout_url: str) -> None:
    assert routed_model("auto", {"model_size": ModelSize.NANO}) == "auto:nano"
    assert routed_model("auto", {"model_size": ModelSize.LARGE}) == "auto:large"
    assert routed_model("auto", {}) == "auto"
    assert routed_model(SMOLLM2_ID, {"model_size": ModelSize.NANO}) == SMOLLM2_ID
    auto = TurnoutNLPService(turnout_url)
    generator = await auto.get_schematic_generator(Verdict, {"model_size": ModelSize.NANO})
    assert generator.binding.model == "auto:nano"
    result = await generator.generate("Is the sky blue? Answer approved=true if yes.")
    assert result.info.model in auto.resolved.catalog.ids
    await auto.aclose()


async def test_family_services_pin_their_family(turnout_url: str) -> None:
    llama, deepseek = LlamaService(turnout_url), DeepSeekService(turnout_url)
    await llama.initialize()
    await deepseek.initialize()
    assert (llama.model, deepseek.model) == (SMOLLM2_ID, DEEPSEEK_ID)
    # Random weights: only the structure of the answer means anything.
    result = await (await deepseek.get_schematic_generator(Verdict)).generate("Approve?")
    assert isinstance(result.content.approved, bool) and result.info.model == DEEPSEEK_ID
    await llama.aclose()
    await deepseek.aclose()


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
