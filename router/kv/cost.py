"""The replica choice of KV-aware routing: the lowest estimated time to first token.

For each candidate replica *r* the estimate is::

    ttft(r) = prefill_s_per_token * (prompt_tokens - cached(r) + queued_prefill_tokens(r))
              + decode_s_per_request * running_requests(r)

``cached(r)`` is the prompt's leading tokens *r*'s engine holds (from :class:`router.kv.index.
KvIndex`; 0 for a replica the index does not trust), capped as vLLM caps hits: whole blocks only,
and never the prompt's last token, which the engine always computes. The first term is the
prefill *r* must do before this prompt's first token: its uncached part plus the prefill already
waiting there; the second is the share of each engine step that its running sequences take
while it does so. The lowest estimate wins; ties go to the replica with the least prefill
waiting, then the fewest running requests, then a stable hash of (prompt, replica), so that
routers that see the same state agree.

When no candidate holds any of the prompt (an empty or distrusted index), ``cached`` is 0
everywhere, the prompt term is the same for all, and the choice is exactly the least-loaded
one under the same load measure: the index can only move a request towards a replica whose
cache saves more prefill than its extra load costs.

A load guard bounds that pull (``max_imbalance``): a replica running more than ``max_imbalance``
requests beyond the least busy candidate is not a candidate. The estimate's weights are not
fitted to every deployment, and the load a router sees is partial (requests it sent recently, or
a replica's last report); without the guard, a replica that holds the prompts of many agents can
draw their traffic until it does all the work while the other idles.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaLoad:
    """What a candidate replica is doing, as the router knows it."""

    running_requests: int = 0  # requests admitted and not finished (decoding, or in prefill)
    queued_prefill_tokens: int = 0  # prompt tokens routed there whose prefill has not finished


@dataclass(frozen=True)
class CostWeights:
    """Seconds per unit of work; only their ratio changes choices. Defaults: SmolLM2-135M on
    vLLM-CPU, two cores (to be measured per deployment)."""

    prefill_s_per_token: float = 0.0005
    decode_s_per_request: float = 0.002

    def __post_init__(self) -> None:
        if self.prefill_s_per_token <= 0 or self.decode_s_per_request < 0:
            raise ValueError("prefill_s_per_token must be > 0 and decode_s_per_request >= 0")


@dataclass(frozen=True)
class KvChoice:
    """The chosen replica, with what explains it (metrics and the response header)."""

    replica: str
    cached_tokens: int  # prompt tokens the chosen replica holds
    best_cached_tokens: int  # the most any candidate holds
    estimated_ttft_s: float
    estimates: Mapping[str, float]  # every candidate's estimate


def cached_tokens(matched_blocks: int, block_size: int, prompt_tokens: int) -> int:
    """Prompt tokens an engine skips given ``matched_blocks`` leading blocks held."""
    if prompt_tokens <= 0:
        return 0
    usable_blocks = (prompt_tokens - 1) // block_size
    return min(matched_blocks, usable_blocks) * block_size


def choose(
    loads: Mapping[str, ReplicaLoad],
    matched_blocks: Mapping[str, int],
    *,
    prompt_tokens: int,
    block_size: int,
    weights: CostWeights = CostWeights(),
    tie_key: bytes = b"",
    max_imbalance: float = math.inf,
) -> KvChoice:
    """The replica among ``loads`` with the lowest estimated time to first token.

    ``matched_blocks`` holds :meth:`KvIndex.match` results; a candidate missing from it counts
    as holding nothing. ``tie_key`` identifies the prompt (e.g. its first block key) for the
    final tie-break. Only replicas running at most ``max_imbalance`` requests more than the least
    busy one are chosen from (the load guard); ``estimates`` covers every candidate. Raises
    ValueError when there is no candidate.
    """
    if not loads:
        raise ValueError("no candidate replicas")
    cached = {r: cached_tokens(matched_blocks.get(r, 0), block_size, prompt_tokens) for r in loads}
    # Ranked without the prompt's own prefill, which is the same for every candidate: with
    # nothing cached the ranking is then computed exactly as least_loaded's, float for float.
    relative = {r: _relative(loads[r], cached[r], weights) for r in loads}
    least_busy = min(load.running_requests for load in loads.values())
    guarded = [r for r in loads if loads[r].running_requests - least_busy <= max_imbalance]
    best = min(guarded, key=lambda r: _rank(r, relative[r], loads[r], tie_key))
    common = weights.prefill_s_per_token * max(prompt_tokens, 0)
    estimates = {r: common + relative[r] for r in loads}
    return KvChoice(
        replica=best,
        cached_tokens=cached[best],
        best_cached_tokens=max(cached.values()),
        estimated_ttft_s=estimates[best],
        estimates=estimates,
    )


def least_loaded(loads: Mapping[str, ReplicaLoad], tie_key: bytes = b"") -> str:
    """The baseline the cost model reduces to when nothing is cached (same tie-breaks)."""
    return choose(loads, {}, prompt_tokens=0, block_size=1, tie_key=tie_key).replica


def tie_key_of(keys: Sequence[int]) -> bytes:
    """A prompt's tie-break key from its block keys (empty for a prompt under one block)."""
    return keys[0].to_bytes(8, "big") if keys else b""


def _relative(load: ReplicaLoad, cached: int, weights: CostWeights) -> float:
    prefill = load.queued_prefill_tokens - cached
    return weights.prefill_s_per_token * prefill + weights.decode_s_per_request * load.running_requests


def _rank(replica: str, relative: float, load: ReplicaLoad, tie_key: bytes) -> tuple:
    stable = hashlib.blake2b(tie_key + replica.encode(), digest_size=8).digest()
    return (relative, load.queued_prefill_tokens, load.running_requests, stable)
