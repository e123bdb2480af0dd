"""``NLPServiceFactory``: services chosen from the models a Turnout backend reports."""

from __future__ import annotations

from typing import Any, Literal

from turnout_parlant.catalog import Catalog
from turnout_parlant.client import TurnoutClient
from turnout_parlant.errors import TurnoutError
from turnout_parlant.service import (
    MODELS_PATH,
    DeepSeekService,
    LlamaService,
    TurnoutNLPService,
)
from turnout_parlant.switcher import ModelSwitcher

ServiceKind = Literal["llama", "deepseek", "model_switcher", "auto"]
_FAMILIES: dict[str, type[TurnoutNLPService]] = {"llama": LlamaService, "deepseek": DeepSeekService}


class NLPServiceFactory:
    """Builds initialised services for one backend; ``options`` go to every service's constructor."""

    def __init__(self, base_url: str, api_key: str | None = None, **options: Any) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.options = options
        self._catalog: Catalog | None = None

    async def initialize(self) -> Catalog:
        """Read the backend's models (raises ``TurnoutConnectionError`` if it cannot be reached)."""
        client = TurnoutClient(self.base_url, self.api_key)
        try:
            self._catalog = Catalog.from_json(await client.get(MODELS_PATH))
        finally:
            await client.aclose()
        return self._catalog

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise TurnoutError("the factory is not initialised: await initialize() first")
        return self._catalog

    async def create_service(self, kind: ServiceKind) -> TurnoutNLPService | ModelSwitcher:
        """``llama`` / ``deepseek``: pinned to that family; ``model_switcher``: a ``ModelSwitcher``
        on ``auto``; ``auto``: the plain service, routed by the backend."""
        if kind == "model_switcher":
            switcher = ModelSwitcher(TurnoutNLPService(self.base_url, self.api_key, **self.options))
            await switcher.initialize()
            return switcher
        if kind != "auto" and kind not in _FAMILIES:
            raise TurnoutError(f"unknown service kind {kind!r}; expected llama, deepseek, model_switcher or auto")
        service = _FAMILIES.get(kind, TurnoutNLPService)(self.base_url, self.api_key, **self.options)
        await service.initialize()
        return service

    async def create_default_service(self) -> TurnoutNLPService | ModelSwitcher:
        """The first family the backend serves healthy and locally (Llama before DeepSeek);
        the backend's own routing (``auto``) when it serves neither."""
        catalog = self._catalog or await self.initialize()
        for family in _FAMILIES:
            if catalog.first("chat", family=family, local=True) is not None:
                return await self.create_service(family)  # type: ignore[arg-type]
        if catalog.first("chat") is None:
            raise TurnoutError(f"{self.base_url} has no healthy chat model; it serves {catalog.ids}")
        return await self.create_service("auto")
