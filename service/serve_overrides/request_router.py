"""``PrefixAffinityRouter``: Ray Serve's replica choice for a model with ``routing: prefix_affinity``.

Serve calls :meth:`choose_replicas` for every request to the model's replicas: in the entry's
handles (a model reached from the edge), and in the ingress request router that HAProxy asks
before it sends a request to an edge replica (Ray's ``LLMRouter``, see ``service.graph``). The
decision is :func:`router.affinity.choose` over the replicas' loads.

Ray 2.60 ships ``PrefixCacheAffinityRouter``; this one differs where it matters on the data path:
- its prefix tree is a detached actor that it calls with a blocking ``ray.get`` two or three
  times per request, on the event loop that also streams tokens; here the table is in-process;
- its load guard is off by default (``imbalanced_threshold=inf``) and reads queue lengths that
  are up to 10 s old when requests reach replicas directly (HAProxy), so a hot prefix can pile
  onto one replica; here a replica's load is its last reported queue length plus the requests
  this router sent it since, refreshed in the background every ``probe_interval_s``.
"""

from __future__ import annotations

import time
from collections import deque
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

from router.affinity import AffinityTable, Decision, choose, prefix_keys, prompt_text

ROUTER_CLASS = "service.serve_overrides.request_router:PrefixAffinityRouter"


class PrefixAffinityRouter(LocalityMixin, MultiplexMixin, RequestRouter):
    """Prefix affinity with a load guard; see the module docstring."""

    def initialize_state(
        self, block_chars: int = 256, max_blocks: int = 64, max_imbalance: float = 4,
        max_keys: int = 200_000, probe_interval_s: float = 0.5,
    ) -> None:
        self._block_chars = block_chars
        self._max_blocks = max_blocks
        self._max_imbalance = max_imbalance
        self._probe_interval_s = probe_interval_s
        self._table = AffinityTable(max_keys)
        self._sent: dict[str, deque[float]] = {}
        self._probing = False
        deployment = self._deployment_id.name if self._deployment_id else ""
        self._decisions = ray_metrics.Counter(
            "turnout_affinity_decisions",
            description="Replica choices of prefix-affinity routing by kind: hit (the replica "
            "holding the prompt's longest known prefix), new, diverted (load guard), short.",
            tag_keys=("deployment", "kind"),
        )
        self._imbalance = ray_metrics.Gauge(
            "turnout_affinity_imbalance",
            description="Highest minus lowest replica load seen by the last routing decision.",
            tag_keys=("deployment",),
        )
        self._matched = ray_metrics.Counter(
            "turnout_affinity_matched_chars",
            description="Prompt characters sent to a replica that already held them.",
            tag_keys=("deployment",),
        )
        self._tags = {"deployment": deployment}

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is not None and pending_request.metadata.multiplexed_model_id:
            ids = self.apply_multiplex_routing(pending_request=pending_request)
            candidates = [r for r in candidate_replicas if r.replica_id in ids] or candidate_replicas
        else:
            candidates = candidate_replicas
        if not candidates:
            return []
        text = _request_text(pending_request)
        keys = prefix_keys(text, self._block_chars, self._max_blocks) if text else []
        by_id = {r.replica_id.to_full_id_str(): r for r in candidates}
        loads = await self._loads(candidates)
        decision = choose(self._table, keys, loads, self._max_imbalance)
        self._sent.setdefault(decision.replica, deque()).append(time.time())
        self._decisions.inc(tags={**self._tags, "kind": decision.decision.value})
        self._imbalance.set(decision.imbalance, tags=self._tags)
        if decision.decision is Decision.HIT:
            self._matched.inc(decision.matched_blocks * self._block_chars, tags=self._tags)
        chosen = by_id[decision.replica]
        rest = sorted((r for r in candidates if r is not chosen), key=lambda r: loads[r.replica_id.to_full_id_str()])
        return [[chosen], rest] if rest else [[chosen]]

    async def _loads(self, replicas: list[RunningReplica]) -> dict[str, float]:
        """Each replica's last reported queue length plus what this router sent it since."""
        now = time.time()
        cache = self._replica_queue_len_cache
        stale = [r for r in replicas if now - _reported_at(cache, r.replica_id) > self._probe_interval_s]
        unknown = [r for r in stale if cache.get(r.replica_id) is None]
        if unknown:  # nothing known at all: ask before deciding
            await self._probe_queue_lens(unknown, 0)
        elif stale and not self._probing:
            self._probing = True
            self._event_loop.create_task(self._probe(stale))
        loads = {}
        for replica in replicas:
            rid = replica.replica_id.to_full_id_str()
            reported = cache.get(replica.replica_id)
            since = _reported_at(cache, replica.replica_id)
            sent = self._sent.get(rid)
            while sent and (sent[0] <= since or now - sent[0] > 60):  # counted in the report, or stale
                sent.popleft()
            loads[rid] = (reported or 0) + len(sent or ())
        return loads

    async def _probe(self, replicas: list[RunningReplica]) -> None:
        try:
            await self._probe_queue_lens(replicas, 0)
        finally:
            self._probing = False

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._table.forget(replica_id.to_full_id_str())
        self._sent.pop(replica_id.to_full_id_str(), None)


def _request_text(pending_request: PendingRequest | None) -> str | None:
    if pending_request is None:
        return None
    for arg in pending_request.args:
        text = prompt_text(arg)
        if text is not None:
            return text
    return None


def _reported_at(cache: Any, replica_id: ReplicaID) -> float:
    entry = cache._cache.get(replica_id)  # the cache exposes no timestamp accessor
    return entry.timestamp if entry is not None else 0.0


def router_config(settings: Any) -> dict[str, Any]:
    """The deployment's ``request_router_config`` for a model's :class:`AffinitySettings`."""
    return {"request_router_class": ROUTER_CLASS, "request_router_kwargs": settings.model_dump()}


def ingress_router(edge: Any) -> Any:
    """The deployment HAProxy asks which edge replica gets a request: Ray Serve LLM's own
    ``LLMRouter``, which applies the edge deployment's ``request_router_config``. HAProxy sends
    it the request body (``RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY=1``, set by ``turnout
    serve`` and the chart), where the prompt is."""
    from ray import serve
    from ray.llm._internal.serve.core.ingress.router import LLMRouter

    router = serve.deployment(LLMRouter, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
    return router.bind(server=edge, llm_config=None, base_model_id=None)
