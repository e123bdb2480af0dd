"""Token estimates from the backend's own tokenizer (``POST /tokenize``): no downloads, no tiktoken."""

from __future__ import annotations

from parlant.core.nlp.tokenization import EstimatingTokenizer
from typing_extensions import override

from turnout_parlant.client import TurnoutClient


class TurnoutTokenizer(EstimatingTokenizer):
    """Counts tokens with an explicit local model's tokenizer on the backend.

    ``model_id`` None means the backend has no local model to tokenize with (a cloud-only
    deployment); the estimate is then the usual four characters per token.
    """

    def __init__(self, client: TurnoutClient, model_id: str | None) -> None:
        self.client = client
        self.model_id = model_id

    @override
    async def estimate_token_count(self, prompt: str) -> int:
        if self.model_id is None:
            return (len(prompt) + 3) // 4
        reply = await self.client.post("/tokenize", {"model": self.model_id, "prompt": prompt})
        return int(reply.body["count"])
