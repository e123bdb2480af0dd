"""Parlant moderation over ``POST /v1/moderations``."""

from __future__ import annotations

from typing import get_args

from parlant.core.loggers import Logger
from parlant.core.meter import Meter
from parlant.core.nlp.moderation import (
    BaseModerationService,
    CustomerModerationContext,
    ModerationCheck,
    ModerationTag,
)
from parlant.core.nlp.policies import policy
from typing_extensions import override

from turnout_parlant.client import Json, TurnoutClient
from turnout_parlant.generation import TRANSIENT_RETRIES

MODERATIONS_PATH = "/v1/moderations"
PARLANT_TAGS: frozenset[str] = frozenset(get_args(ModerationTag))
# OpenAI's names for what Parlant calls jailbreak; every other tag has the same name in both.
_ALIASES = {"prompt-injection": "jailbreak", "prompt_injection": "jailbreak"}


def tags_of(result: Json) -> list[ModerationTag]:
    """Parlant tags for the flagged categories; sub-categories (``hate/threatening``) count as
    their parent, and categories Parlant has no tag for are dropped."""
    tags: set[ModerationTag] = set()
    for category, flagged in (result.get("categories") or {}).items():
        parent = category.split("/", 1)[0]
        tag = _ALIASES.get(parent, parent)
        if flagged and tag in PARLANT_TAGS:
            tags.add(tag)  # type: ignore[arg-type]
    return sorted(tags)


class TurnoutModeration(BaseModerationService):
    """Customer messages checked by whatever moderation target the backend routes to."""

    def __init__(self, client: TurnoutClient, model: str | None, logger: Logger, meter: Meter) -> None:
        super().__init__(logger=logger, meter=meter)
        self.client = client
        self.model = model

    @policy(TRANSIENT_RETRIES)
    @override
    async def do_moderate(self, context: CustomerModerationContext) -> ModerationCheck:
        request: Json = {"input": context.message} | ({"model": self.model} if self.model else {})
        reply = await self.client.post(MODERATIONS_PATH, request)
        result = reply.body["results"][0]
        return ModerationCheck(flagged=bool(result.get("flagged")), tags=tags_of(result))
