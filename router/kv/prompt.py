"""A request's prompt as the engine's token ids, for :class:`router.kv.hashing.BlockHasher`.

The router must see the tokens the engine will see, or its block keys miss the engine's cache:
chat messages go through the checkpoint's own chat template with the generation prompt, as
vLLM's chat endpoint renders them; a completion prompt is tokenized with the tokenizer's special
tokens, as vLLM's completion endpoint does; token-id prompts are taken as they are. Requests with
tools, images or a custom chat template may render differently in the engine: their keys then
match less of the cache than it holds (a lost hit, never a wrong answer).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any


class PromptTokens:
    """Token ids of requests for the checkpoint whose tokenizer is at ``tokenizer`` (loaded on
    first use, so a router that never sees a prompt never loads it)."""

    def __init__(self, tokenizer: str) -> None:
        self.tokenizer = tokenizer

    @functools.cached_property
    def _tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer)

    def load(self) -> None:
        """Load the tokenizer now (it is loaded on first use otherwise)."""
        self._tokenizer  # noqa: B018 - the cached property loads it

    def ids(self, request: Any) -> list[int] | None:
        """The prompt's token ids, or None when ``request`` has neither messages nor a prompt."""
        messages = _get(request, "messages")
        if messages:
            rendered = self._tokenizer.apply_chat_template(
                [_plain(m) for m in messages], add_generation_prompt=True, tokenize=True, return_dict=False,
            )
            return list(rendered)
        prompt = _get(request, "prompt")
        if isinstance(prompt, list) and prompt:
            prompt = prompt[0]
        if isinstance(prompt, str):
            return list(self._tokenizer(prompt)["input_ids"])
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return prompt
        return None


def _get(request: Any, name: str) -> Any:
    return request.get(name) if isinstance(request, Mapping) else getattr(request, name, None)


def _plain(message: Any) -> dict[str, Any]:
    """A message as the chat template reads it: role and content (text parts joined)."""
    if hasattr(message, "model_dump"):
        message = message.model_dump(exclude_none=True)
    elif not isinstance(message, Mapping):
        message = vars(message)
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content)
    return {**message, "content": content if content is not None else ""}
