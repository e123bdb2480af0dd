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
from service.serve_overrides.replica_loads import ReplicaLoads

ROUTER_CLASS = "service.serve_overrides.request_router:PrefixAffinityRouter"


class PrefixAffinityRouter(ReplicaLoads, LocalityMixin, MultiplexMixin, RequestRouter):
    """Prefix affinity with a load guard; see the module docstring."""

    def initialize_state(
        self, block_chars: int = 256, max_blocks: int = 64, max_imbalance: float = 4,
        max_keys: int = 200_000, probe_interval_s: float = 0.5,
    ) -> None:
        self._block_chars = block_chars
        self._max_blocks = max_blocks
        self._max_imbalance = max_imbalance
        self._init_loads(probe_interval_s)
        self._table = AffinityTable(max_keys)
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
        candidates = self._candidates(candidate_replicas, pending_request)
        if not candidates:
            return []
        text = _request_text(pending_request)
        keys = prefix_keys(text, self._block_chars, self._max_blocks) if text else []
        by_id = {r.replica_id.to_full_id_str(): r for r in candidates}
        loads = await self._loads(candidates)
        decision = choose(self._table, keys, loads, self._max_imbalance)
        self._sent_to(decision.replica)
        self._decisions.inc(tags={**self._tags, "kind": decision.decision.value})
        self._imbalance.set(decision.imbalance, tags=self._tags)
        if decision.decision is Decision.HIT:
            self._matched.inc(decision.matched_blocks * self._block_chars, tags=self._tags)
        chosen = by_id[decision.replica]
        rest = sorted((r for r in candidates if r is not chosen), key=lambda r: loads[r.replica_id.to_full_id_str()])
        return [[chosen], rest] if rest else [[chosen]]

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._table.forget(replica_id.to_full_id_str())
        self._forget_loads(replica_id)


def _request_text(pending_request: PendingRequest | None) -> str | None:
    if pending_request is None:
        return None
    for arg in pending_request.args:
        text = prompt_text(arg)
        if text is not None:
            return text
    return None


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
