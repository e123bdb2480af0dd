"""Parlant embedder over ``POST /v1/embeddings``, pinned to one embedding model of the backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parlant.core.loggers import Logger
from parlant.core.meter import Meter
from parlant.core.nlp.embedding import BaseEmbedder, EmbeddingResult
from parlant.core.nlp.policies import policy
from parlant.core.nlp.tokenization import EstimatingTokenizer
from parlant.core.tracer import Tracer
from typing_extensions import override

from turnout_parlant.catalog import ModelCard
from turnout_parlant.client import Json, TurnoutClient
from turnout_parlant.generation import TRANSIENT_RETRIES
from turnout_parlant.tokenizer import TurnoutTokenizer

EMBEDDINGS_PATH = "/v1/embeddings"


def vectors_of(body: Json) -> list[list[float]]:
    """The vectors of an embeddings answer, in input order."""
    return [item["embedding"] for item in sorted(body["data"], key=lambda item: item["index"])]


def dimensions_of(probe: Json) -> int:
    """Width of the model's vectors: the one vector of a probe answer."""
    return len(vectors_of(probe)[0])


class TurnoutEmbedder(BaseEmbedder):
    """Embeddings from one explicit model, so vectors stored by Parlant stay comparable.

    Parlant names vector collections after the embedder's class, and resolves the class through
    its container: the loader registers the instance (``container[TurnoutEmbedder] = embedder``).
    """

    def __init__(self, client: TurnoutClient, card: ModelCard, dimensions: int, logger: Logger, tracer: Tracer, meter: Meter) -> None:
        super().__init__(logger=logger, tracer=tracer, meter=meter, model_name=card.id)
        self.client = client
        self.card = card
        self._dimensions = dimensions
        self._tokenizer = TurnoutTokenizer(client, card.id if card.is_local else None)

    @property
    @override
    def id(self) -> str:
        return f"turnout/{self.card.id}"

    @property
    @override
    def max_tokens(self) -> int:
        return self.card.context_length

    @property
    @override
    def tokenizer(self) -> EstimatingTokenizer:
        return self._tokenizer

    @property
    @override
    def dimensions(self) -> int:
        return self._dimensions

    @policy(TRANSIENT_RETRIES)
    @override
    async def do_embed(self, texts: list[str], hints: Mapping[str, Any] = {}) -> EmbeddingResult:
        reply = await self.client.post(EMBEDDINGS_PATH, {"model": self.card.id, "input": texts})
        return EmbeddingResult(vectors=vectors_of(reply.body))
