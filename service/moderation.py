"""Moderation served by a local chat model under a constrained JSON schema.

The model answers one boolean per top-level OpenAI category; the result is returned in OpenAI's
``/v1/moderations`` shape (sub-categories follow their parent; scores are 0 or 1).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from engine.errors import ClientError
from router.errors import TargetUnavailableError
from router.protocol import Target
from service.backends.protocol import Backend, Json
from service.serve_overrides.openai_types import ChatCompletionRequest

CATEGORIES = ("harassment", "hate", "illicit", "self-harm", "sexual", "violence")
SUBCATEGORIES = {
    "harassment/threatening": "harassment",
    "hate/threatening": "hate",
    "illicit/violent": "illicit",
    "self-harm/intent": "self-harm",
    "self-harm/instructions": "self-harm",
    "sexual/minors": "sexual",
    "violence/graphic": "violence",
}
_SCHEMA = {
    "type": "object",
    "properties": {c: {"type": "boolean"} for c in CATEGORIES},
    "required": list(CATEGORIES),
    "additionalProperties": False,
}
_INSTRUCTIONS = (
    "You are a content moderation system. For the user's text, answer with JSON: for each "
    f"category ({', '.join(CATEGORIES)}) true if the text contains such content, else false."
)


async def moderate_with_chat(backend: Backend, target: Target, body: Json) -> Json:
    """Moderate ``body["input"]`` (a string or a list of strings) with a chat model."""
    texts = _texts(body.get("input"))
    results = await asyncio.gather(*(_moderate_one(backend, target, t) for t in texts))
    return {"id": f"modr-{uuid.uuid4().hex}", "model": target.id, "results": list(results)}


async def _moderate_one(backend: Backend, target: Target, text: str) -> Json:
    request = ChatCompletionRequest(
        model=target.id,
        messages=[{"role": "system", "content": _INSTRUCTIONS}, {"role": "user", "content": text}],
        response_format={"type": "json_schema", "json_schema": {"name": "moderation", "schema": _SCHEMA}},
        temperature=0.0,
        max_tokens=128,
    )
    answer = await backend.chat(request)
    verdict = _parse(target, answer.body or {})
    categories = {c: bool(verdict[c]) for c in CATEGORIES}
    categories |= {sub: categories[parent] for sub, parent in SUBCATEGORIES.items()}
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": {name: float(flag) for name, flag in categories.items()},
        "category_applied_input_types": {name: ["text"] for name in categories},
    }


def _parse(target: Target, body: Json) -> dict[str, Any]:
    try:
        verdict = json.loads(body["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
        raise TargetUnavailableError(f"{target.id} gave no valid moderation verdict") from e
    if not isinstance(verdict, dict) or not all(isinstance(verdict.get(c), bool) for c in CATEGORIES):
        raise TargetUnavailableError(f"{target.id} gave no valid moderation verdict")
    return verdict


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise ClientError("input must be a string or a non-empty list of strings", param="input")
