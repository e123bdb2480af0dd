"""``ModelSwitcher``: a service whose model can change at run time, that watches how each model
does, and that falls back to another NLP service when the backend itself cannot be reached."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parlant.core.engines.alpha.prompt_builder import PromptBuilder
from parlant.core.nlp.embedding import Embedder
from parlant.core.nlp.generation import (
    SchematicGenerationResult,
    SchematicGenerator,
    StreamingTextGenerator,
    T,
)
from parlant.core.nlp.moderation import ModerationService
from parlant.core.nlp.service import (
    EmbedderHints,
    NLPService,
    SchematicGeneratorHints,
    StreamingTextGeneratorHints,
)
from parlant.core.nlp.tokenization import EstimatingTokenizer
from typing_extensions import override

from turnout_parlant.catalog import ModelCard
from turnout_parlant.errors import TurnoutConnectionError, TurnoutError
from turnout_parlant.service import AUTO, TurnoutNLPService


@dataclass
class ModelStats:
    """What the switcher observed of one model: calls, failures, and latency of the successes."""

    calls: int = 0
    failures: int = 0
    total_latency_s: float = 0.0
    last_error: str = ""

    @property
    def mean_latency_s(self) -> float:
        successes = self.calls - self.failures
        return self.total_latency_s / successes if successes else 0.0


class ModelSwitcher(NLPService):
    """Routes through ``service`` (``auto`` by default: local models first, then the backend's
    cloud fallbacks). ``fallback`` is used only when Turnout is unreachable."""

    def __init__(self, service: TurnoutNLPService, fallback: NLPService | None = None) -> None:
        self.service = service
        self.fallback = fallback
        self._chosen: str | None = None
        self.stats: dict[str, ModelStats] = {}

    async def initialize(self) -> None:
        await self.service.initialize()

    @property
    def current_model(self) -> str:
        """The model ``set_model`` chose, else the service's own (``auto`` or its pinned model)."""
        return self._chosen or self.service.model

    async def list_available_models(self) -> list[ModelCard]:
        """The backend's healthy chat targets, as it reports them now."""
        catalog = await self.service.refresh_catalog()
        return [card for card in catalog.cards if card.healthy and "chat" in card.capabilities]

    async def set_model(self, model: str) -> None:
        """Send every later call to ``model`` (an id the backend serves, or an ``auto`` alias)."""
        if not model.startswith(AUTO):
            catalog = await self.service.refresh_catalog()
            if catalog.get(model) is None:
                raise TurnoutError(f"{self.service.client.root} does not serve {model!r}; it serves {catalog.ids}")
        self._chosen = model

    def record(self, model: str, started: float, error: Exception | None) -> None:
        stats = self.stats.setdefault(model, ModelStats())
        stats.calls += 1
        if error is None:
            stats.total_latency_s += time.monotonic() - started
        else:
            stats.failures += 1
            stats.last_error = f"{type(error).__name__}: {error}"

    @property
    @override
    def supports_streaming(self) -> bool:
        return self.service.supports_streaming

    @override
    async def get_schematic_generator(self, t: type[T], hints: SchematicGeneratorHints = {}) -> SchematicGenerator[T]:
        await self.service.initialize()
        return SwitchingSchematicGenerator[t](self, hints)  # type: ignore[valid-type]

    @override
    async def get_streaming_text_generator(self, hints: StreamingTextGeneratorHints = {}) -> StreamingTextGenerator:
        return await self.service.get_streaming_text_generator(hints)

    @override
    async def get_embedder(self, hints: EmbedderHints = {}) -> Embedder:
        # No fallback: another service's vectors would not be comparable with the stored ones.
        return await self.service.get_embedder(hints)

    @override
    async def get_moderation_service(self) -> ModerationService:
        return await self.service.get_moderation_service()


class SwitchingSchematicGenerator(SchematicGenerator[T]):
    """Asks the switcher for the current model on every call, so ``set_model`` takes effect in a
    running Parlant server, and records what each call cost."""

    def __init__(self, switcher: ModelSwitcher, hints: SchematicGeneratorHints) -> None:
        self.switcher = switcher
        self.hints = hints

    @property
    @override
    def id(self) -> str:
        return f"turnout-switcher/{self.switcher.current_model}"

    @property
    @override
    def max_tokens(self) -> int:
        return self.switcher.service.binding(self.hints, self.switcher.current_model).context_length

    @property
    @override
    def tokenizer(self) -> EstimatingTokenizer:
        return self.switcher.service.binding(self.hints, self.switcher.current_model).tokenizer

    @override
    async def generate(self, prompt: str | PromptBuilder, hints: Mapping[str, Any] = {}) -> SchematicGenerationResult[T]:
        model = self.switcher.current_model
        generator = self.switcher.service.schematic_generator(self.schema, self.hints, model)
        started = time.monotonic()
        try:
            result = await generator.generate(prompt, hints)
        except TurnoutConnectionError as e:
            self.switcher.record(model, started, e)
            if self.switcher.fallback is None:
                raise
            return await self._fall_back(self.switcher.fallback, prompt, hints)
        except TurnoutError as e:
            self.switcher.record(model, started, e)
            raise
        self.switcher.record(result.info.model or model, started, None)
        return result

    async def _fall_back(
        self, fallback: NLPService, prompt: str | PromptBuilder, hints: Mapping[str, Any],
    ) -> SchematicGenerationResult[T]:
        generator = await fallback.get_schematic_generator(self.schema, self.hints)
        started = time.monotonic()
        try:
            result = await generator.generate(prompt, hints)
        except Exception as e:
            self.switcher.record(f"fallback/{generator.id}", started, e)
            raise
        self.switcher.record(f"fallback/{generator.id}", started, None)
        return result
