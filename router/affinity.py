"""Prefix affinity among the replicas of one model: send a prompt where its prefix is cached.

vLLM's prefix cache keeps the KV blocks of prompts it has seen; a request whose prompt starts
like an earlier one skips that part of the prefill, but only on the replica that saw it. This
module decides which replica that is, with a load guard so that one hot prefix does not pile
onto one replica. It knows nothing of Ray: :mod:`service.serve_overrides.request_router` feeds it replica ids and loads.

A prompt is cut into blocks of ``block_chars`` characters; block *i*'s key hashes the whole
prompt up to the end of block *i* (a chain, like vLLM's block hashes), so two prompts share key
*i* exactly when their first *i + 1* blocks are equal. The last, partial block has a key
too, so equal prompts share every key. The :class:`AffinityTable` remembers, per key, the
replicas that prefilled it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Decision(str, Enum):
    """How a replica was chosen (the ``kind`` label of the affinity metric)."""

    HIT = "hit"  # the replica that holds the longest known prefix of the prompt
    NEW = "new"  # no replica holds any of it: the least loaded one, which now owns it
    DIVERTED = "diverted"  # the owner was too far above the least loaded; sent there instead
    SHORT = "short"  # no prompt text to go by: plain load balancing


@dataclass(frozen=True)
class Choice:
    replica: str
    decision: Decision
    matched_blocks: int
    imbalance: float  # highest minus lowest load among the candidates when it was decided


def prompt_text(request: Any) -> str | None:
    """The text a request's prompt starts with: its ``messages`` (role and content of each, in
    order) or its ``prompt``; None when it has neither. ``request`` may be a parsed OpenAI
    request or a namespace of its JSON body."""
    messages = getattr(request, "messages", None)
    if messages:
        return "".join(f"{_get(m, 'role')}\x1f{_text(_get(m, 'content'))}\x1e" for m in messages)
    prompt = getattr(request, "prompt", None)
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        return first if isinstance(first, str) else " ".join(str(t) for t in prompt)
    return None


def _get(message: Any, name: str) -> Any:
    return message.get(name) if isinstance(message, Mapping) else getattr(message, name, None)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part.get("text") if isinstance(part, Mapping) else part) for part in content)
    return str(content)


def prefix_keys(text: str, block_chars: int, max_blocks: int) -> list[bytes]:
    """One key per whole block of ``text``, then one for the whole of it (the last, partial
    block), at most ``max_blocks`` keys; key *i* covers everything up to the end of block *i*.

    The last key makes equal prompts of any length meet on one replica, where both the engine's
    prefix cache and the entry's response cache hold them."""
    keys: list[bytes] = []
    digest = b""
    for start in range(0, len(text), block_chars):
        if len(keys) == max_blocks:
            break
        block = text[start:start + block_chars].encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(digest + block, digest_size=16).digest()
        keys.append(digest)
    return keys


class AffinityTable:
    """Prefix key -> the replicas that prefilled it (most recent last), least recently used key
    first out beyond ``max_keys``."""

    def __init__(self, max_keys: int, max_holders: int = 16) -> None:
        self.max_keys = max_keys
        self.max_holders = max_holders
        self._holders: OrderedDict[bytes, list[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._holders)

    def longest(self, keys: list[bytes], live: Iterable[str]) -> tuple[list[str], int]:
        """The live replicas holding the deepest of ``keys`` any of them holds, and how many
        blocks that is (no replicas and 0 when none holds even the first)."""
        alive = set(live)
        for depth in range(len(keys), 0, -1):
            holders = [r for r in self._holders.get(keys[depth - 1], ()) if r in alive]
            if holders:
                self._holders.move_to_end(keys[depth - 1])
                return holders, depth
        return [], 0

    def record(self, keys: list[bytes], replica: str) -> None:
        """``replica`` prefilled ``keys`` (its engine's prefix cache holds them now)."""
        for key in keys:
            holders = self._holders.setdefault(key, [])
            if replica in holders:
                holders.remove(replica)
            holders.append(replica)
            del holders[:-self.max_holders]
            self._holders.move_to_end(key)
        while len(self._holders) > self.max_keys:
            self._holders.popitem(last=False)

    def forget(self, replica: str) -> None:
        """Drop ``replica`` from every key (it is gone)."""
        for key in list(self._holders):
            holders = self._holders[key]
            if replica in holders:
                holders.remove(replica)
                if not holders:
                    del self._holders[key]


def choose(
    table: AffinityTable, keys: list[bytes], loads: Mapping[str, float], max_imbalance: float,
) -> Choice:
    """The replica for a prompt with ``keys``, given each candidate's current ``loads``.

    Among the replicas holding the longest known prefix of the prompt, the least loaded wins,
    unless its load exceeds the least loaded candidate's by more than ``max_imbalance`` (then
    the least loaded candidate, which then holds the prefix too); a prompt nobody holds goes to
    the least loaded. Ties are broken by the prompt, so that routers that see the same loads
    agree. The choice is recorded in ``table``.
    """
    if not loads:
        raise ValueError("no candidate replicas")
    lowest = min(loads.values())
    imbalance = max(loads.values()) - lowest
    tie = keys[-1] if keys else b""

    def least(replicas: Iterable[str]) -> str:
        return min(replicas, key=lambda r: (loads[r], _rank(tie, r)))

    if not keys:
        return Choice(least(loads), Decision.SHORT, 0, imbalance)
    holders, depth = table.longest(keys, loads)
    if not holders:
        choice = Choice(least(loads), Decision.NEW, 0, imbalance)
    elif loads[best := least(holders)] - lowest > max_imbalance:
        choice = Choice(least(loads), Decision.DIVERTED, depth, imbalance)
    else:
        choice = Choice(best, Decision.HIT, depth, imbalance)
    table.record(keys, choice.replica)
    return choice


def _rank(key: bytes, replica: str) -> bytes:
    return hashlib.blake2b(key + replica.encode(), digest_size=8).digest()
