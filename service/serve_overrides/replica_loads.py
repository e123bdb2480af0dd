"""Replica loads as a request router sees them between Serve's queue-length reports.

Shared by Turnout's request routers (:mod:`service.serve_overrides.request_router`,
:mod:`service.serve_overrides.kv_router`): a replica's load is its last reported queue length plus
the requests this router sent it since, so a burst of choices made between two reports does not
pile onto one replica. Reports are refreshed in the background every ``probe_interval_s``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ray.serve._private.common import ReplicaID
from ray.serve._private.request_router.replica_wrapper import RunningReplica

SENT_TTL_S = 60  # a request sent this long ago is counted by any report since


class ReplicaLoads:
    """Mixin for a ``RequestRouter``: :meth:`_candidates`, :meth:`_loads` and :meth:`_sent_to`; call
    :meth:`_init_loads` from ``initialize_state`` and :meth:`_forget_loads` when a replica dies."""

    def _init_loads(self, probe_interval_s: float, window_s: float | None = None) -> None:
        """``window_s``: count the requests sent in the last ``window_s`` seconds whatever the
        reports say, and take the larger of that count and the report. Reports of an edge
        replica read 0 while it streams to HAProxy's clients (seen on Ray 2.60), so a burst sent
        between reports would otherwise vanish from its load at the next report."""
        self._probe_interval_s = probe_interval_s
        self._window_s = window_s
        self._sent: dict[str, deque[tuple[float, int]]] = {}
        self._probing = False

    def _candidates(self: Any, replicas: list[RunningReplica], pending_request: Any) -> list[RunningReplica]:
        """The replicas that already hold the request's LoRA adapter, when it names one and any
        does (Serve's multiplexing); otherwise all of them."""
        if pending_request is not None and pending_request.metadata.multiplexed_model_id:
            ids = self.apply_multiplex_routing(pending_request=pending_request)
            return [r for r in replicas if r.replica_id in ids] or replicas
        return replicas

    def _sent_to(self, replica: str, work: int = 0) -> None:
        """Count a request sent to ``replica`` now, with ``work`` (e.g. prompt tokens to prefill)."""
        self._sent.setdefault(replica, deque()).append((time.time(), work))

    def _pending_work(self, replica: str) -> int:
        """The ``work`` of the requests sent to ``replica`` that its load still counts."""
        return sum(work for _, work in self._sent.get(replica, ()))

    async def _loads(self: Any, replicas: list[RunningReplica]) -> dict[str, float]:
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
            reported = cache.get(replica.replica_id) or 0
            sent = self._sent.get(rid)
            if self._window_s is not None:
                while sent and now - sent[0][0] > self._window_s:
                    sent.popleft()
                loads[rid] = max(reported, len(sent or ()))
                continue
            since = _reported_at(cache, replica.replica_id)
            while sent and (sent[0][0] <= since or now - sent[0][0] > SENT_TTL_S):  # in the report, or stale
                sent.popleft()
            loads[rid] = reported + len(sent or ())
        return loads

    async def _probe(self: Any, replicas: list[RunningReplica]) -> None:
        try:
            await self._probe_queue_lens(replicas, 0)
        finally:
            self._probing = False

    def _forget_loads(self, replica_id: ReplicaID) -> None:
        self._sent.pop(replica_id.to_full_id_str(), None)


def _reported_at(cache: Any, replica_id: ReplicaID) -> float:
    entry = cache._cache.get(replica_id)  # the cache exposes no timestamp accessor
    return entry.timestamp if entry is not None else 0.0
