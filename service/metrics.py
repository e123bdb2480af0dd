"""Ingress metrics, exported by Ray (Prometheus names get Ray's ``ray_`` prefix).

``turnout_requests_total`` by endpoint, model, route (direct or fallback) and status;
``turnout_fallbacks_total`` by target and reason; ``turnout_router_decision_seconds``;
``turnout_time_to_first_token_seconds`` and ``turnout_request_latency_seconds`` as the client sees
them; ``turnout_tokens_total`` by model and direction; ``turnout_circuit_state`` (0 closed,
1 half-open, 2 open) by target; ``turnout_model_available`` (1 or 0) by local model reached by handle;
``turnout_response_cache_requests_total`` by endpoint, model and result (hit, miss, bypass),
``turnout_response_cache_bytes`` and ``turnout_response_cache_entries`` (per entry replica).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.errors import TurnoutError
from router.protocol import CircuitState, Endpoint, RouteEvent

_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
_DECISION_BUCKETS = [1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2]


class Metrics:
    """Records ingress metrics through Ray's metric classes (injectable for unit tests)."""

    def __init__(self, counter: Any = None, histogram: Any = None, gauge: Any = None) -> None:
        if counter is None:
            from ray.serve.metrics import Counter as counter
            from ray.serve.metrics import Gauge as gauge
            from ray.serve.metrics import Histogram as histogram
        self._requests = counter(
            "turnout_requests_total", description="Requests by endpoint, model, route and status.",
            tag_keys=("endpoint", "model", "route", "status"),
        )
        self._fallbacks = counter(
            "turnout_fallbacks_total", description="Targets skipped or failed, by reason.",
            tag_keys=("target", "reason"),
        )
        self._tokens = counter(
            "turnout_tokens_total", description="Prompt (in) and generated (out) tokens.",
            tag_keys=("model", "direction"),
        )
        self._decision = histogram(
            "turnout_router_decision_seconds", description="Time to plan a route.",
            boundaries=_DECISION_BUCKETS, tag_keys=(),
        )
        self._ttft = histogram(
            "turnout_time_to_first_token_seconds", description="Arrival to first chunk.",
            boundaries=_LATENCY_BUCKETS, tag_keys=("model",),
        )
        self._latency = histogram(
            "turnout_request_latency_seconds", description="Arrival to last byte.",
            boundaries=_LATENCY_BUCKETS, tag_keys=("endpoint", "model"),
        )
        self._available = gauge(
            "turnout_model_available", description="1 while a local model has a running replica, else 0.",
            tag_keys=("model",),
        )
        self._circuit = gauge(
            "turnout_circuit_state", description="0 closed, 1 half-open, 2 open.", tag_keys=("target",),
        )
        self._cache = counter(
            "turnout_response_cache_requests_total",
            description="Requests the response cache answered (hit), could not (miss) or was not asked (bypass).",
            tag_keys=("endpoint", "model", "result"),
        )
        self._cache_bytes = gauge(
            "turnout_response_cache_bytes", description="Bytes of answers in this entry's cache.", tag_keys=(),
        )
        self._cache_entries = gauge(
            "turnout_response_cache_entries", description="Answers in this entry's cache.", tag_keys=(),
        )

    def decision(self, seconds: float) -> None:
        self._decision.observe(seconds, tags={})

    def fallbacks(self, events: Iterable[RouteEvent]) -> None:
        for event in events:
            self._fallbacks.inc(1, tags={"target": event.target_id, "reason": event.fallback_reason.value})

    def first_token(self, model: str, seconds: float) -> None:
        self._ttft.observe(seconds, tags={"model": model})

    def completed(
        self, endpoint: Endpoint, model: str, fell_back: bool, body: Mapping[str, Any], seconds: float
    ) -> None:
        """A non-streamed answer: its latency is also its time to first token."""
        self.first_token(model, seconds)
        self._finish(endpoint, model, fell_back, "ok", seconds)
        usage = body.get("usage") or {}
        self._count_tokens(model, usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def streamed(
        self, endpoint: Endpoint, model: str, fell_back: bool, chunks: int, seconds: float, status: str
    ) -> None:
        """A stream ended; each content chunk carries about one token."""
        self._finish(endpoint, model, fell_back, status, seconds)
        self._count_tokens(model, None, max(chunks - 2, 0))  # less the role chunk and [DONE]

    def failed(self, endpoint: Endpoint, model: str, error: BaseException) -> None:
        status = str(error.status_code) if isinstance(error, TurnoutError) else "500"
        self._requests.inc(1, tags={"endpoint": endpoint.value, "model": model, "route": "none", "status": status})

    def cache(self, endpoint: Endpoint, model: str, result: str) -> None:
        self._cache.inc(1, tags={"endpoint": endpoint.value, "model": model, "result": result})

    def cache_size(self, size: int, entries: int) -> None:
        self._cache_bytes.set(size, tags={})
        self._cache_entries.set(entries, tags={})

    def cached(self, endpoint: Endpoint, model: str, seconds: float) -> None:
        """An answer from the response cache (no tokens were generated for it)."""
        self.first_token(model, seconds)
        self._requests.inc(1, tags={"endpoint": endpoint.value, "model": model, "route": "cached", "status": "ok"})
        self._latency.observe(seconds, tags={"endpoint": endpoint.value, "model": model})

    def available(self, model: str, available: bool) -> None:
        self._available.set(1 if available else 0, tags={"model": model})

    def circuits(self, states: Mapping[str, CircuitState]) -> None:
        for target_id, state in states.items():
            self._circuit.set(state.metric, tags={"target": target_id})

    def _finish(self, endpoint: Endpoint, model: str, fell_back: bool, status: str, seconds: float) -> None:
        route = "fallback" if fell_back else "direct"
        self._requests.inc(1, tags={"endpoint": endpoint.value, "model": model, "route": route, "status": status})
        self._latency.observe(seconds, tags={"endpoint": endpoint.value, "model": model})

    def _count_tokens(self, model: str, prompt: int | None, completion: int | None) -> None:
        if prompt:
            self._tokens.inc(prompt, tags={"model": model, "direction": "in"})
        if completion:
            self._tokens.inc(completion, tags={"model": model, "direction": "out"})
