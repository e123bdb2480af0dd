"""``TurnoutNLPService``: Parlant's NLP service, every call served by a Turnout backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parlant.core.loggers import Logger, LogLevel, StdoutLogger
from parlant.core.meter import LocalMeter, Meter
from parlant.core.nlp.embedding import Embedder
from parlant.core.nlp.generation import SchematicGenerator, StreamingTextGenerator, T
from parlant.core.nlp.moderation import ModerationService, NoModeration
from parlant.core.nlp.service import (
    EmbedderHints,
    ModelSize,
    NLPService,
    SchematicGeneratorHints,
    StreamingTextGeneratorHints,
)
from parlant.core.tracer import LocalTracer, Tracer
from typing_extensions import override

from turnout_parlant.catalog import Catalog, ModelCard
from turnout_parlant.client import Json, Timeouts, TurnoutClient
from turnout_parlant.embedding import EMBEDDINGS_PATH, TurnoutEmbedder, dimensions_of
from turnout_parlant.errors import TurnoutError
from turnout_parlant.generation import (
    Binding,
    GenerationSettings,
    TurnoutSchematicGenerator,
    TurnoutStreamingTextGenerator,
)
from turnout_parlant.moderation import TurnoutModeration
from turnout_parlant.tokenizer import TurnoutTokenizer

MODELS_PATH = "/v1/models"
AUTO = "auto"
UNKNOWN_CONTEXT = 4096
# Parlant's model_size hints, as the router's size aliases.
SIZE_ALIASES = {ModelSize.NANO: "auto:nano", ModelSize.MINI: "auto:mini", ModelSize.LARGE: "auto:large"}


def routed_model(model: str, hints: SchematicGeneratorHints | StreamingTextGeneratorHints) -> str:
    """An ``auto`` service follows Parlant's size hint; a pinned model is never overridden."""
    if model != AUTO:
        return model
    return SIZE_ALIASES.get(hints.get("model_size", ModelSize.AUTO), AUTO)


@dataclass(frozen=True)
class Resolved:
    """What initialisation learnt from the backend."""

    catalog: Catalog
    model: str
    embedder: TurnoutEmbedder


class TurnoutNLPService(NLPService):
    """A Parlant ``NLPService`` on a Turnout server.

    ``model`` is ``"auto"`` (the backend routes each call, local models first, and Parlant's
    ``model_size`` hints become ``auto:nano|mini|large``) or an explicit model id. The backend is
    asked for its models once, by ``await initialize()`` (or ``initialize_sync()`` in start-up
    code that Parlant calls synchronously), which also fixes the embedding model and its width.
    """

    family: ClassVar[str | None] = None

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str = AUTO,
        *,
        embedding_model: str | None = None,
        moderation_model: str | None = None,
        settings: GenerationSettings = GenerationSettings(),
        timeouts: Timeouts = Timeouts(),
        logger: Logger | None = None,
        tracer: Tracer | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.client = TurnoutClient(base_url, api_key, timeouts)
        self.requested_model = model
        self.embedding_model = embedding_model
        self.moderation_model = moderation_model
        self.settings = settings
        self.tracer = tracer or LocalTracer()
        self.logger = logger or StdoutLogger(self.tracer, LogLevel.INFO)
        self.meter = meter or LocalMeter(self.logger)
        self._resolved: Resolved | None = None

    async def initialize(self) -> None:
        """Read the backend's models and probe the embedding model's width (once)."""
        if self._resolved is None:
            catalog = Catalog.from_json(await self.client.get(MODELS_PATH))
            card = self._embedding_card(catalog)
            probe = (await self.client.post(EMBEDDINGS_PATH, _probe(card))).body
            self._resolved = self._resolve(catalog, card, probe)

    def initialize_sync(self) -> None:
        """``initialize`` with blocking calls, for Parlant's synchronous ``nlp_service`` loader."""
        if self._resolved is None:
            catalog = Catalog.from_json(self.client.get_sync(MODELS_PATH))
            card = self._embedding_card(catalog)
            self._resolved = self._resolve(catalog, card, self.client.post_sync(EMBEDDINGS_PATH, _probe(card)))

    async def refresh_catalog(self) -> Catalog:
        """The backend's models now (health and circuits change); the pinned model stays."""
        catalog = Catalog.from_json(await self.client.get(MODELS_PATH))
        if self._resolved is not None:
            self._resolved = Resolved(catalog, self._resolved.model, self._resolved.embedder)
        return catalog

    @property
    def resolved(self) -> Resolved:
        if self._resolved is None:
            raise TurnoutError("the service is not initialised: await initialize() (or initialize_sync()) first")
        return self._resolved

    @property
    def model(self) -> str:
        """The model requests name: an explicit id, or ``auto``."""
        return self.resolved.model

    @property
    def embedder(self) -> TurnoutEmbedder:
        return self.resolved.embedder

    def resolve_model(self, catalog: Catalog) -> str:
        """The model this service sends requests to, checked against the backend's list."""
        model = self.requested_model
        if model == AUTO or model.startswith(f"{AUTO}:"):
            return model
        if catalog.get(model) is None:
            raise TurnoutError(f"{self.client.root} does not serve {model!r}; it serves {catalog.ids}")
        return model

    def binding(self, hints: SchematicGeneratorHints | StreamingTextGeneratorHints = {}, model: str | None = None) -> Binding:
        """Where a generator for ``hints`` sends requests, with the context and tokenizer of the
        model (for ``auto``: of the first local chat model, the one the router prefers)."""
        model = routed_model(model or self.model, hints)
        catalog = self.resolved.catalog
        card = catalog.get(model)
        local = card if card is not None and card.is_local else catalog.first("chat", local=True)
        sized = card or local or catalog.first("chat")
        context = sized.context_length if sized else UNKNOWN_CONTEXT
        return Binding(model, context, TurnoutTokenizer(self.client, local.id if local else None))

    @property
    @override
    def supports_streaming(self) -> bool:
        return True

    @override
    async def get_schematic_generator(self, t: type[T], hints: SchematicGeneratorHints = {}) -> SchematicGenerator[T]:
        await self.initialize()
        return self.schematic_generator(t, hints)

    def schematic_generator(self, t: type[T], hints: SchematicGeneratorHints = {}, model: str | None = None) -> TurnoutSchematicGenerator[T]:
        """A generator for ``model`` (default: this service's model); the service must be initialised."""
        return TurnoutSchematicGenerator[t](  # type: ignore[valid-type]
            self.client, self.binding(hints, model), self.settings, self.logger, self.tracer, self.meter,
        )

    @override
    async def get_streaming_text_generator(self, hints: StreamingTextGeneratorHints = {}) -> StreamingTextGenerator:
        await self.initialize()
        return TurnoutStreamingTextGenerator(self.client, self.binding(hints), self.settings)

    @override
    async def get_embedder(self, hints: EmbedderHints = {}) -> Embedder:
        # One embedder whatever the hints: vectors Parlant stored must stay comparable.
        await self.initialize()
        return self.embedder

    @override
    async def get_moderation_service(self) -> ModerationService:
        await self.initialize()
        if self.resolved.catalog.first("moderation") is None:
            self.logger.warning(f"{self.client.root} has no healthy moderation target; moderation is off")
            return NoModeration()
        return TurnoutModeration(self.client, self.moderation_model, self.logger, self.meter)

    async def aclose(self) -> None:
        await self.client.aclose()

    def _embedding_card(self, catalog: Catalog) -> ModelCard:
        card = catalog.get(self.embedding_model) if self.embedding_model else catalog.first("embeddings")
        if card is None:
            wanted = repr(self.embedding_model) if self.embedding_model else "healthy embedding model"
            raise TurnoutError(f"{self.client.root} has no {wanted}; it serves {catalog.ids}")
        return card

    def _resolve(self, catalog: Catalog, card: ModelCard, probe: Json) -> Resolved:
        embedder = TurnoutEmbedder(self.client, card, dimensions_of(probe), self.logger, self.tracer, self.meter)
        return Resolved(catalog, self.resolve_model(catalog), embedder)


def _probe(card: ModelCard) -> Json:
    return {"model": card.id, "input": ["dimensions"]}


class FamilyService(TurnoutNLPService):
    """The service pinned to one model family: the first healthy chat model of ``family`` on the
    backend, unless ``model`` names one."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None, **kwargs: object) -> None:
        super().__init__(base_url, api_key, model or AUTO, **kwargs)  # type: ignore[arg-type]

    @override
    def resolve_model(self, catalog: Catalog) -> str:
        if self.requested_model != AUTO:
            return super().resolve_model(catalog)
        card = catalog.first("chat", family=self.family)
        if card is None:
            raise TurnoutError(f"{self.client.root} has no healthy {self.family} chat model; it serves {catalog.ids}")
        return card.id


class LlamaService(FamilyService):
    """``TurnoutNLPService`` pinned to a Llama model of the backend."""

    family = "llama"


class DeepSeekService(FamilyService):
    """``TurnoutNLPService`` pinned to a DeepSeek model of the backend."""

    family = "deepseek"
