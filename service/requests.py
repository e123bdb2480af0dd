"""One client request, validated once at the HTTP entry: what every layer after it reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.protocol import Endpoint, RequestNeeds

Json = dict[str, Any]


@dataclass(frozen=True)
class ClientRequest:
    """A request as the HTTP layer accepted it (:func:`service.api.parsing.client_request`).

    ``body`` is the JSON the client sent (the response cache's key; a cloud provider's body);
    ``engine`` the vLLM request model validated from it (what a local replica serves; None for
    moderations, which a local model answers through a chat of its own); ``needs`` the router's
    reading of it: model choice and size, capabilities, prompt and output tokens.
    """

    endpoint: Endpoint
    body: Json
    engine: Any
    needs: RequestNeeds
