"""The gateway: one request's trip from a validated :class:`ClientRequest` to a committed answer.

For each request it takes the needs the HTTP layer derived (router.needs), plans a route over live stats
(router.planner), and walks the plan through the circuit breakers (router.fallback), sending each
attempt to the target's :class:`Backend`. It records metrics on the way. It knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.errors import ClientError, ModelNotFoundError
from router.circuit import CircuitBoard
from router.fallback import Routed, walk
from router.planner import Router
from router.protocol import IDLE, Endpoint, RequestNeeds, RoutePlan, Target, TargetStats
from service.backends.protocol import (
    DONE,
    Answer,
    Backend,
    Json,
    RawRequest,
    error_event,
)
from service.cache import (
    CachePolicy,
    Entry,
    ResponseCache,
    StreamRecorder,
    cache_key,
    deterministic,
    replayed_body,
    replayed_events,
)
from service.metrics import Metrics
from service.moderation import moderate_with_chat
from service.requests import ClientRequest

log = logging.getLogger("turnout.gateway")
T = TypeVar("T")


@dataclass
class Served:
    """A routed answer and the route it took (for the ``X-Turnout-Route`` header)."""

    answer: Answer
    target: Target
    route: str
    cache: str | None = None  # hit, miss or bypass; None when the response cache is off


class Gateway:
    """Routes requests over ``backends`` (one per router target id) with fallback."""

    def __init__(
        self, router: Router, backends: Mapping[str, Backend], circuits: CircuitBoard,
        metrics: Metrics, output_default: int | None = None, cache: ResponseCache | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> None:
        self.router = router
        self.cache = cache
        self.revisions = revisions if revisions is not None else {}  # target id -> what changes when its weights do
        self.output_default = output_default  # max_tokens of a local chat that sets none
        self.backends = dict(backends)
        self.circuits = circuits
        self.metrics = metrics
        self.healthy: dict[str, bool] = {target_id: True for target_id in self.backends}
        self.in_flight: dict[str, int] = {target_id: 0 for target_id in self.backends}

    async def chat(self, request: ClientRequest, policy: CachePolicy | None = None) -> Served:
        """Route a chat completion; ``policy`` lets the response cache answer it and keep its
        answer (None: the cache is not used)."""
        return await self._generate(request, self._chat_call, policy)

    async def completions(self, request: ClientRequest, policy: CachePolicy | None = None) -> Served:
        """Route a text completion."""
        return await self._generate(request, self._completions_call, policy)

    async def embeddings(self, request: ClientRequest, policy: CachePolicy | None = None) -> Served:
        """Route an embeddings request."""

        async def attempt(target: Target) -> Answer:
            return Answer(body=await self.backends[target.served_by].embeddings(_retarget(request, target)))

        return await self._route(request, attempt, policy)

    async def moderations(self, request: ClientRequest) -> Served:
        """Route a moderation request: a cloud moderation endpoint or a local chat model."""

        async def attempt(target: Target) -> Answer:
            backend = self.backends[target.served_by]
            if target.is_cloud:
                return Answer(body=await backend.moderations(request.body))
            return Answer(body=await moderate_with_chat(backend, target, request.body))

        return await self._route(request, attempt)

    async def tokenize(self, model_id: str, request: Any) -> Json:
        """Tokenize with an explicit local model's tokenizer."""
        target = self.router.target(model_id)
        if target.is_cloud:
            raise ClientError(f"{model_id} is a cloud model; tokenize needs a local model", param="model")
        return await self.backends[target.served_by].tokenize(request.model_copy(update={"model": target.id}))

    def stats(self) -> dict[str, TargetStats]:
        """Live health, circuit state and load of every target, for the router.

        Runs on every request: idle healthy targets share one object, and the others are built
        without validation (the gateway keeps ``in_flight`` non-negative).
        """
        stats = {
            target_id: _live(self.healthy[target_id], self.in_flight[target_id])
            for target_id in self.backends
        }
        return self.circuits.with_circuits(stats, list(stats))

    async def probe_health(self) -> None:
        """Ask every backend whether it is healthy (run periodically)."""
        ids = list(self.backends)
        results = await asyncio.gather(*(self.backends[i].healthy() for i in ids))
        for target_id, ok in zip(ids, results):
            if ok != self.healthy[target_id]:
                log.warning("%s is now %s", target_id, "healthy" if ok else "unhealthy")
            self.healthy[target_id] = ok
        self.metrics.circuits(self.circuits.states())

    async def _generate(
        self, request: ClientRequest, call: Callable[[Target, Any], Awaitable[Answer]], policy: CachePolicy | None,
    ) -> Served:
        async def attempt(target: Target) -> Answer:
            return await call(target, self._with_output_default(_retarget(request, target), target, request.needs))

        return await self._route(request, attempt, policy)

    def _with_output_default(self, request: Any, target: Target, needs: RequestNeeds) -> Any:
        """A local chat request without max_tokens gets the operator's default, clipped to what
        the prompt (as the router counted it) leaves of the target's context. Without it a small
        prompt may generate until the context is full: minutes on a CPU."""
        unset = getattr(request, "max_tokens", 0) is None and getattr(request, "max_completion_tokens", 0) is None
        if target.is_cloud or self.output_default is None or not unset:
            return request
        room = max(1, target.context_length - needs.prompt_tokens)
        return request.model_copy(update={"max_tokens": min(self.output_default, room)})

    def _chat_call(self, target: Target, request: Any) -> Awaitable[Answer]:
        return self.backends[target.served_by].chat(request)

    def _completions_call(self, target: Target, request: Any) -> Awaitable[Answer]:
        return self.backends[target.served_by].completions(request)

    async def _route(
        self, request: ClientRequest, attempt: Callable[[Target], Awaitable[Answer]],
        policy: CachePolicy | None = None,
    ) -> Served:
        endpoint, needs, body = request.endpoint, request.needs, request.body
        started = time.perf_counter()
        cached: str | None = None
        try:  # a plan that finds no target (503, or a 4xx) is counted like a failed walk
            plan = self.router.plan(needs, self.stats())
            self.metrics.decision(time.perf_counter() - started)
            if self.cache is not None and policy is not None:
                cached = "miss" if deterministic(endpoint, body) and policy.read else "bypass"
                entry = self.cache.get(self._key(endpoint, plan.primary.id, body)) if cached == "miss" else None
                if entry is not None:
                    return self._hit(endpoint, entry, started)
                self.metrics.cache(endpoint, plan.primary.id, cached)
            routed = await walk(plan, self._counted(attempt), self.circuits)
        except ModelNotFoundError:
            raise  # not counted: its model label would be whatever the client sent
        except Exception as error:
            self.metrics.failed(endpoint, needs.target_id or "auto", error)
            raise
        finally:
            self.metrics.circuits(self.circuits.states())
        served = self._served(endpoint, plan, routed, started)
        served.cache = cached
        if cached is not None and policy is not None and policy.write and deterministic(endpoint, body):
            self._fill(self._key(endpoint, served.target.id, body), served)
        return served

    def _key(self, endpoint: Endpoint, target_id: str, body: Json) -> str:
        return cache_key(endpoint, target_id, self.revisions.get(target_id, ""), body)

    def _hit(self, endpoint: Endpoint, entry: Entry, started: float) -> Served:
        target = self.router.target(entry.target_id)
        self.metrics.cache(endpoint, target.id, "hit")
        self.metrics.cached(endpoint, target.id, time.perf_counter() - started)
        if entry.body is not None:
            return Served(Answer(body=replayed_body(entry)), target, f"{target.id}=cached", "hit")
        return Served(Answer(chunks=replayed_events(entry)), target, f"{target.id}=cached", "hit")

    def _fill(self, key: str, served: Served) -> None:
        """Keep ``served``'s answer: a body now, a stream once it has ended well."""
        cache = self.cache
        assert cache is not None
        answer = served.answer
        if answer.chunks is None:
            if answer.body is not None and "error" not in answer.body:
                cache.put(key, Entry(served.target.id, body=answer.body))
                self.metrics.cache_size(cache.bytes, len(cache))
            return
        answer.chunks = self._recorded(answer.chunks, StreamRecorder(served.target.id, cache.max_entry_bytes), key)

    async def _recorded(self, chunks: AsyncIterator[str], recorder: StreamRecorder, key: str) -> AsyncIterator[str]:
        async for chunk in chunks:
            recorder.add(chunk)
            yield chunk
        entry = recorder.entry()
        if entry is not None and self.cache is not None:
            self.cache.put(key, entry)
            self.metrics.cache_size(self.cache.bytes, len(self.cache))

    def _counted(self, attempt: Callable[[Target], Awaitable[T]]) -> Callable[[Target], Awaitable[T]]:
        async def counted(target: Target) -> T:
            self.in_flight[target.served_by] += 1  # an adapter loads its base's replicas
            try:
                return await attempt(target)
            finally:
                self.in_flight[target.served_by] -= 1

        return counted

    def _served(self, endpoint: Endpoint, plan: RoutePlan, routed: Routed[Answer], started: float) -> Served:
        answer, target = routed.result, routed.target
        self.metrics.fallbacks(routed.events)
        first_token = time.perf_counter() - started
        fell_back = target.id != plan.primary.id
        if answer.chunks is None:
            self.metrics.completed(endpoint, target.id, fell_back, answer.body or {}, first_token)
        else:
            answer.chunks = self._metered(endpoint, target.id, fell_back, answer.chunks, started)
        return Served(answer, target, routed.route)

    async def _metered(
        self, endpoint: Endpoint, target_id: str, fell_back: bool, chunks: AsyncIterator[str],
        started: float,
    ) -> AsyncIterator[str]:
        count, status = 0, "error"
        self.metrics.first_token(target_id, time.perf_counter() - started)
        try:
            async for chunk in chunks:
                count += chunk.count("\n\n")  # a chunk may carry several SSE events
                yield chunk
            status = "ok"
        except Exception as e:  # noqa: BLE001 - a backend that raised instead of ending the stream
            yield error_event(e) + DONE
        finally:
            self.metrics.streamed(endpoint, target_id, fell_back, count, time.perf_counter() - started, status)


def _live(healthy: bool, in_flight: int) -> TargetStats:
    if healthy and not in_flight:
        return IDLE
    return TargetStats.model_construct(healthy=healthy, in_flight=in_flight)


def _retarget(request: ClientRequest, target: Target) -> Any:
    """The request addressed to ``target``: local replicas get the validated object with the
    served id; cloud targets the client's own body with the upstream name (see RawRequest)."""
    if target.is_cloud:
        return RawRequest({**request.body, "model": target.name})
    return request.engine.model_copy(update={"model": target.id})
