"""``KvAwareRouter``: Ray Serve's replica choice for a model with ``routing: kv_aware``.

Each replica's engine publishes its prefix cache's KV events (``kv_events_config``, set by
``service.graph``) on its node's address, and the replica advertises the endpoints through Serve's
routing stats (``service.serve_overrides.engine_class``). This router, wherever Serve runs it (the
ingress request router that HAProxy asks for the edge model, the entry's handles for others),
subscribes to every advertised publisher and keeps :class:`router.kv.index.KvIndex` of the blocks
each engine holds. For a request it computes the prompt's block keys as the engine will
(:mod:`router.kv.prompt`, :mod:`router.kv.hashing`) and picks the replica with the lowest
estimated time to first token (:func:`router.kv.cost.choose`). A replica whose events the index
does not trust (just started, lost events being replayed, a dead publisher) counts as holding
nothing, so stale state never routes worse than least-loaded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray.serve._private.common import ReplicaID
from ray.serve._private.request_router.common import PendingRequest
from ray.serve._private.request_router.replica_wrapper import RunningReplica
from ray.serve._private.request_router.request_router import (
    LocalityMixin,
    MultiplexMixin,
    RequestRouter,
)
from ray.util import metrics as ray_metrics

from router.kv.cost import CostWeights, ReplicaLoad, choose, tie_key_of
from router.kv.hashing import BlockHasher
from router.kv.index import KvIndex
from router.kv.prompt import PromptTokens
from router.kv.subscriber import KvEventSubscriber
from service.serve_overrides.replica_loads import ReplicaLoads

ROUTER_CLASS = "service.serve_overrides.kv_router:KvAwareRouter"
from service.serve_overrides.engine_class import KV_STATS_KEY as STATS_KEY

log = logging.getLogger("turnout.kv_router")


class KvAwareRouter(ReplicaLoads, LocalityMixin, MultiplexMixin, RequestRouter):
    """KV-event-fed, cost-model replica choice; see the module docstring."""

    def initialize_state(
        self, tokenizer: str, pythonhashseed: str | None = None, prefill_s_per_token: float = 0.0005,
        decode_s_per_request: float = 0.002, probe_interval_s: float = 0.5, max_blocks: int = 1 << 18,
        load_window_s: float = 2.0, max_imbalance: float = 4,
    ) -> None:
        self._init_loads(probe_interval_s, load_window_s)
        self._prompts = PromptTokens(tokenizer)
        # load the tokenizer now, off the event loop: the first requests must not wait for it
        threading.Thread(target=self._prompts.load, name="kv-router-tokenizer", daemon=True).start()
        self._seed = pythonhashseed
        self._weights = CostWeights(prefill_s_per_token, decode_s_per_request)
        self._max_imbalance = max_imbalance
        self._index = KvIndex(max_blocks=max_blocks)
        self._subscribers: dict[str, KvEventSubscriber] = {}
        self._hashers: dict[int, BlockHasher] = {}
        self._tags = {"deployment": self._deployment_id.name if self._deployment_id else ""}
        self._decisions = ray_metrics.Counter(
            "turnout_kv_decisions",
            description="KV-aware replica choices by kind: hit (the replica holding the most of "
            "the prompt), diverted (another replica, cheaper by the cost model), miss (no replica "
            "holds any of it), unknown (no prompt tokens or no block size yet).",
            tag_keys=("deployment", "kind"),
        )
        self._tokens = ray_metrics.Counter(
            "turnout_kv_cached_tokens",
            description="Prompt tokens cached on the chosen replica (kind=chosen) and on the best "
            "candidate (kind=best), per the router's index.",
            tag_keys=("deployment", "kind"),
        )
        self._blocks = ray_metrics.Gauge(
            "turnout_kv_index_blocks", description="Blocks the router's index holds for a replica.",
            tag_keys=("deployment", "replica"),
        )
        self._lag = ray_metrics.Gauge(
            "turnout_kv_event_lag_seconds",
            description="Seconds since the router last received a KV event batch from a replica.",
            tag_keys=("deployment", "replica"),
        )

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        candidates = self._candidates(candidate_replicas, pending_request)
        if not candidates:
            return []
        by_id = {r.replica_id.to_full_id_str(): r for r in candidates}
        block_size = await self._follow(candidates)
        loads = await self._loads(candidates)
        tokens = await asyncio.to_thread(_prompt_ids, self._prompts, pending_request) or []
        keys = self._hasher(block_size).block_keys(tokens) if tokens and block_size else []
        matched = self._index.match(keys, by_id) if keys else {}
        replica_loads = {
            rid: ReplicaLoad(running_requests=int(loads[rid]), queued_prefill_tokens=self._pending_work(rid))
            for rid in by_id
        }
        choice = choose(replica_loads, matched, prompt_tokens=len(tokens), block_size=block_size or 1,
                        weights=self._weights, tie_key=tie_key_of(keys), max_imbalance=self._max_imbalance)
        self._sent_to(choice.replica, len(tokens) - choice.cached_tokens)
        self._record(choice, bool(keys), by_id)
        chosen = by_id[choice.replica]
        rest = sorted((r for r in candidates if r is not chosen),
                      key=lambda r: choice.estimates[r.replica_id.to_full_id_str()])
        return [[chosen], rest] if rest else [[chosen]]

    def _hasher(self, block_size: int) -> BlockHasher:
        if block_size not in self._hashers:
            self._hashers[block_size] = BlockHasher(block_size, pythonhashseed=self._seed)
        return self._hashers[block_size]

    async def _follow(self, replicas: list[RunningReplica]) -> int | None:
        """Subscribe to each replica's advertised publisher (again if it moved: an engine started
        again in place); the block size they advertise, if any has."""
        block_size = None
        for replica in replicas:
            stats = (replica.routing_stats or {}).get(STATS_KEY)
            if not stats:
                continue
            block_size = block_size or stats["block_size"]
            rid = replica.replica_id.to_full_id_str()
            current = self._subscribers.get(rid)
            if current is not None and current.endpoint == stats["endpoint"]:
                continue
            subscriber = KvEventSubscriber(self._index, rid, stats["endpoint"],
                                           replay_endpoint=stats.get("replay_endpoint"), topic=stats.get("topic", ""))
            self._subscribers[rid] = subscriber  # before any await: concurrent choices start one only
            if current is not None:
                await current.close()
                self._index.remove_replica(rid)
            try:
                await subscriber.start()
            except Exception:  # a replica that cannot be followed counts as holding nothing
                log.exception("cannot follow the KV events of %s at %s", rid, stats["endpoint"])
        return block_size

    def _record(self, choice: Any, known: bool, replicas: dict[str, RunningReplica]) -> None:
        if not known:
            kind = "unknown"
        elif choice.best_cached_tokens == 0:
            kind = "miss"
        else:
            kind = "hit" if choice.cached_tokens == choice.best_cached_tokens else "diverted"
        self._decisions.inc(tags={**self._tags, "kind": kind})
        if choice.best_cached_tokens:
            self._tokens.inc(choice.cached_tokens, tags={**self._tags, "kind": "chosen"})
            self._tokens.inc(choice.best_cached_tokens, tags={**self._tags, "kind": "best"})
        for rid in replicas:
            stats = self._index.stats(rid)
            if stats is not None:
                tags = {**self._tags, "replica": rid}
                self._blocks.set(stats.num_blocks, tags=tags)
                if stats.seconds_since_event is not None:
                    self._lag.set(stats.seconds_since_event, tags=tags)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        rid = replica_id.to_full_id_str()
        self._forget_loads(replica_id)
        subscriber = self._subscribers.pop(rid, None)
        if subscriber is not None:
            asyncio.ensure_future(subscriber.close(), loop=self._event_loop)
        self._index.remove_replica(rid)


def _prompt_ids(prompts: PromptTokens, pending_request: PendingRequest | None) -> list[int] | None:
    if pending_request is None:
        return None
    for arg in pending_request.args:
        try:
            ids = prompts.ids(arg)
        except Exception:  # a prompt the router cannot render is routed by load
            log.debug("cannot tokenize a request for routing", exc_info=True)
            return None
        if ids is not None:
            return ids
    return None


def router_config(settings: Any, tokenizer: str, pythonhashseed: str | None) -> dict[str, Any]:
    """The deployment's ``request_router_config`` for a model's :class:`KvRoutingSettings`."""
    kwargs = {
        "tokenizer": tokenizer, "pythonhashseed": pythonhashseed,
        "prefill_s_per_token": settings.prefill_s_per_token, "decode_s_per_request": settings.decode_s_per_request,
        "probe_interval_s": settings.probe_interval_s, "max_blocks": settings.max_blocks,
        "load_window_s": settings.load_window_s, "max_imbalance": settings.max_imbalance,
    }
    return {"request_router_class": ROUTER_CLASS, "request_router_kwargs": kwargs,
            "request_routing_stats_period_s": settings.stats_period_s}
