"""Contracts of the router: targets, what a request needs, live stats, route plans and policies.

The router turns a request's :class:`RequestNeeds` and the current :class:`TargetStats` into a
:class:`RoutePlan`, an ordered list of :class:`Target` objects to try. It never sends anything
itself; the service walks the plan (see :func:`router.fallback.walk`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from engine.protocol import Capability, ModelType
from engine.quantize.schemes import Quantization


class SizeClass(str, Enum):
    """Coarse model size, used by ``auto:<size>`` aliases and the ``X-Turnout-Size`` hint."""

    NANO = "nano"
    MINI = "mini"
    LARGE = "large"


class TargetKind(str, Enum):
    """Where a target runs: a local replica or a cloud provider."""

    LOCAL = "local"
    CLOUD = "cloud"


class Endpoint(str, Enum):
    """The OpenAI endpoint a request came in on; decides its base capability."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    MODERATIONS = "moderations"


class CircuitState(str, Enum):
    """State of a target's circuit breaker; :attr:`metric` is its gauge value."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def metric(self) -> int:
        """0 closed, 1 half-open, 2 open."""
        return _CIRCUIT_METRIC[self]


_CIRCUIT_METRIC = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class FallbackReason(str, Enum):
    """Why a request moved past a target; the label of the "fallbacks by reason" metric."""

    ERROR = "error"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    CONTEXT_LENGTH = "context_length"


class SkipReason(str, Enum):
    """Why the planner left a target out of a plan before trying it."""

    CIRCUIT_OPEN = "circuit_open"
    UNHEALTHY = "unhealthy"
    CONTEXT_LENGTH = "context_length"
    MISSING_CAPABILITY = "missing_capability"

    @property
    def fallback_reason(self) -> FallbackReason:
        """The metric label this skip counts under."""
        if self is SkipReason.CONTEXT_LENGTH:
            return FallbackReason.CONTEXT_LENGTH
        return FallbackReason.UNAVAILABLE


class Target(BaseModel):
    """Something a request can be sent to: a local model replica or a cloud model.

    Build one with :func:`router.targets.local_target` or :func:`router.targets.cloud_target`;
    they derive the id (``local/<family>/<name>`` or ``cloud/<provider>/<model>``) and the size.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="local/<family>/<name> or cloud/<provider>/<model>.")
    kind: TargetKind
    name: str = Field(description="Local model name, or the provider's upstream model name.")
    family: ModelType | None = Field(default=None, description="Local targets only.")
    provider: str | None = Field(default=None, description="Cloud targets only.")
    capabilities: frozenset[Capability]
    context_length: int = Field(ge=1, description="Longest sequence (prompt + output) in tokens.")
    size: SizeClass
    parameters: int | None = Field(default=None, ge=0, description="Known or estimated.")
    base: str | None = Field(
        default=None, description="LoRA adapters only: the local target whose replicas serve it.",
    )
    quantization: Quantization | None = Field(
        default=None, description="Local targets only: how the served weights are quantized.",
    )

    @property
    def served_by(self) -> str:
        """The target whose backend answers this one: the base of an adapter, else itself."""
        return self.base or self.id

    @property
    def is_cloud(self) -> bool:
        return self.kind is TargetKind.CLOUD

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def missing(self, needs: RequestNeeds) -> list[Capability]:
        """The needed capabilities this target lacks, in :class:`Capability` order."""
        if needs.capabilities <= self.capabilities:  # the common case, on every routing decision
            return []
        return [c for c in Capability if c in needs.capabilities and c not in self.capabilities]

    def fits(self, needs: RequestNeeds) -> bool:
        """Whether the request's prompt plus output budget fits in this target's context."""
        return needs.context_tokens <= self.context_length


class RequestNeeds(BaseModel):
    """What one request requires of a target; see :func:`router.needs.derive_needs`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capabilities: frozenset[Capability]
    prompt_tokens: int = Field(ge=0, description="Measured by the service, or estimated.")
    max_tokens: int | None = Field(
        default=None, ge=0, description="Output budget; None means whatever the context leaves."
    )
    target_id: str | None = Field(default=None, description="Explicit model id; None for auto.")
    size: SizeClass | None = Field(default=None, description="Size wanted by auto routing.")

    @property
    def is_auto(self) -> bool:
        return self.target_id is None

    @property
    def context_tokens(self) -> int:
        """Tokens a target's context must hold: prompt plus output budget."""
        return self.prompt_tokens + (self.max_tokens or 0)


class TargetStats(BaseModel):
    """Live view of one target, gathered by the service just before planning.

    A target without an entry in the stats mapping counts as ``TargetStats()``: healthy, closed,
    idle.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    healthy: bool = True
    circuit: CircuitState = CircuitState.CLOSED
    in_flight: int = Field(default=0, ge=0, description="Requests being served now.")
    queued: int = Field(default=0, ge=0, description="Requests waiting for a slot.")
    capacity: int | None = Field(default=None, ge=1, description="Concurrent requests it serves.")

    @property
    def load(self) -> float:
        """Outstanding requests, as a fraction of capacity when capacity is known."""
        outstanding = self.in_flight + self.queued
        return outstanding / self.capacity if self.capacity else float(outstanding)


IDLE = TargetStats()


@dataclass(frozen=True)
class RouteEvent:
    """One step of a route: a target skipped by the planner or failed while being tried."""

    target_id: str
    reason: SkipReason | FallbackReason

    @property
    def fallback_reason(self) -> FallbackReason:
        """The metric label of this event."""
        if isinstance(self.reason, SkipReason):
            return self.reason.fallback_reason
        return self.reason

    def __str__(self) -> str:
        return f"{self.target_id}={self.reason.value}"


ROUTE_HEADER = "X-Turnout-Route"


def describe_route(events: Sequence[RouteEvent], served_by: str | None = None) -> str:
    """Render a route for the :data:`ROUTE_HEADER` header: ``id=reason, ..., id=served``."""
    parts = [str(event) for event in events]
    if served_by is not None:
        parts.append(f"{served_by}=served")
    return ", ".join(parts)


class RoutePlan(BaseModel):
    """The targets to try, best first, and the targets left out with the reason for each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: tuple[Target, ...] = Field(min_length=1)
    skipped: tuple[RouteEvent, ...] = ()
    policy: str = Field(description="Name of the policy that ordered the targets.")

    @property
    def primary(self) -> Target:
        return self.targets[0]


class RoutingPolicy(ABC):
    """Orders eligible targets for one request. Implementations are pure and stateless.

    The planner has already removed targets that lack a capability, lack context, are unhealthy
    or have an open circuit; a policy only decides the order.
    """

    name: ClassVar[str]

    @abstractmethod
    def order(
        self,
        candidates: Sequence[Target],
        stats: Mapping[str, TargetStats],
        needs: RequestNeeds,
    ) -> list[Target]:
        """Return ``candidates`` (all of them, each once) best first.

        ``candidates`` arrive in configured order; ``stats`` may lack entries (treat as idle).
        """
