"""The backend's model list (``GET /v1/models`` with its ``turnout`` metadata), as typed cards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    """One serving target as the backend describes it."""

    id: str
    kind: str
    family: str
    capabilities: frozenset[str]
    context_length: int
    size: str
    healthy: bool
    circuit: str

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> ModelCard:
        meta = entry.get("turnout") or {}
        return cls(
            id=entry["id"],
            kind=meta.get("kind", "cloud"),
            family=meta.get("family") or "",
            capabilities=frozenset(meta.get("capabilities") or ()),
            context_length=int(meta.get("context_length") or 0),
            size=meta.get("size") or "",
            healthy=bool(meta.get("healthy", True)),
            circuit=meta.get("circuit") or "",
        )


@dataclass(frozen=True)
class Catalog:
    """Every target the backend reports, in the backend's order."""

    cards: Sequence[ModelCard]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Catalog:
        return cls(tuple(ModelCard.from_json(entry) for entry in body.get("data", ())))

    @property
    def ids(self) -> list[str]:
        return [card.id for card in self.cards]

    def get(self, model_id: str) -> ModelCard | None:
        return next((card for card in self.cards if card.id == model_id), None)

    def first(self, capability: str, family: str | None = None, local: bool | None = None) -> ModelCard | None:
        """The first healthy target with ``capability`` (local ones before cloud ones)."""
        matches = [
            card for card in self.cards
            if card.healthy and capability in card.capabilities
            and (family is None or card.family == family)
            and (local is None or card.is_local == local)
        ]
        return min(matches, key=lambda card: not card.is_local, default=None)
