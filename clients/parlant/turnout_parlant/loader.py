"""Loaders for ``parlant.sdk.Server(nlp_service=...)``, which wants ``callable(container) -> NLPService``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lagom import Container
from parlant.core.loggers import Logger
from parlant.core.meter import Meter
from parlant.core.nlp.service import NLPService
from parlant.core.tracer import Tracer

from turnout_parlant.embedding import TurnoutEmbedder
from turnout_parlant.service import DeepSeekService, LlamaService, TurnoutNLPService
from turnout_parlant.switcher import ModelSwitcher

_KINDS: dict[str, type[TurnoutNLPService]] = {
    "auto": TurnoutNLPService, "llama": LlamaService, "deepseek": DeepSeekService,
}


def turnout_nlp_service(
    base_url: str, api_key: str | None = None, kind: str = "auto", **options: Any,
) -> Callable[[Container], NLPService]:
    """``nlp_service=turnout_nlp_service("http://127.0.0.1:8000")``.

    ``kind`` is ``auto``, ``llama``, ``deepseek`` or ``model_switcher``; ``options`` go to the
    service's constructor (``model=``, ``settings=``, ...). Loading asks the backend for its
    models, so Parlant's start fails at once, with the URL in the message, if it is unreachable.
    """
    if kind != "model_switcher" and kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {[*_KINDS, 'model_switcher']}")

    def load(container: Container) -> NLPService:
        service = _KINDS.get(kind, TurnoutNLPService)(
            base_url, api_key,
            logger=container[Logger], tracer=container[Tracer], meter=container[Meter],  # type: ignore[type-abstract]
            **options,
        )
        service.initialize_sync()
        # Parlant resolves the embedder by its class through the container.
        container[TurnoutEmbedder] = service.embedder
        return ModelSwitcher(service) if kind == "model_switcher" else service

    return load
