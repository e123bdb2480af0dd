"""What the Parlant adapter sends: a seeded request, so Turnout's response cache can answer it."""

from __future__ import annotations

from types import SimpleNamespace

from turnout_parlant.generation import (
    Binding,
    GenerationSettings,
    TurnoutSchematicGenerator,
    chat_request,
)

from router.protocol import Endpoint
from service.cache import deterministic

BINDING = Binding(model="local/llama/x", context_length=2048, tokenizer=None)  # type: ignore[arg-type]



def test_parlants_low_temperatures_are_seeded_and_so_cacheable() -> None:
    request = chat_request(BINDING, GenerationSettings(), "prompt", {"temperature": 0.15})
    assert request["seed"] == 0 and request["temperature"] == 0.15
    assert deterministic(Endpoint.CHAT, request)
    unseeded = chat_request(BINDING, GenerationSettings(seed=None), "prompt", {"temperature": 0.15})
    assert "seed" not in unseeded and not deterministic(Endpoint.CHAT, unseeded)


def test_a_validation_retry_is_another_draw_not_a_cached_repeat() -> None:
    generator = SimpleNamespace(settings=GenerationSettings(seed=7))
    request = {"temperature": 0.1, "seed": 7}
    second = TurnoutSchematicGenerator._warmer(generator, request, 2)  # type: ignore[arg-type]
    third = TurnoutSchematicGenerator._warmer(generator, request, 3)  # type: ignore[arg-type]
    assert (second["seed"], third["seed"]) == (8, 9)
    assert second["temperature"] == third["temperature"] == 0.7
