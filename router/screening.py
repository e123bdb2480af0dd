"""Pure helpers of the planner: screening targets for one request, and explaining empty results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.protocol import Capability
from router.errors import (
    CapabilityUnavailableError,
    ContextLengthExceededError,
    NoHealthyTargetError,
)
from router.protocol import (
    IDLE,
    CircuitState,
    RequestNeeds,
    RouteEvent,
    SkipReason,
    Target,
    TargetStats,
)


def skip_reason(target: Target, needs: RequestNeeds, stats: TargetStats) -> SkipReason | None:
    """Why ``target`` cannot take the request now, or None if it can."""
    if target.missing(needs):
        return SkipReason.MISSING_CAPABILITY
    if not target.fits(needs):
        return SkipReason.CONTEXT_LENGTH
    if not stats.healthy:
        return SkipReason.UNHEALTHY
    if stats.circuit is CircuitState.OPEN:
        return SkipReason.CIRCUIT_OPEN
    return None


def screen(
    targets: Sequence[Target], needs: RequestNeeds, stats: Mapping[str, TargetStats]
) -> tuple[list[Target], list[RouteEvent]]:
    """Split ``targets`` (order kept) into those that can take the request and skip events."""
    kept: list[Target] = []
    skipped: list[RouteEvent] = []
    tokens, wanted = needs.context_tokens, needs.capabilities
    for target in targets:
        current = stats.get(target.id) or stats.get(target.served_by, IDLE)  # an adapter: its base
        if current is IDLE and tokens <= target.context_length and wanted <= target.capabilities:
            kept.append(target)  # the common case, decided without building a reason
            continue
        reason = skip_reason(target, needs, current)
        if reason is None:
            kept.append(target)
        else:
            skipped.append(RouteEvent(target.id, reason))
    return kept, skipped


def explain_empty(
    chain: Sequence[Target], needs: RequestNeeds, skipped: Sequence[RouteEvent]
) -> Exception:
    """The error for a request none of ``chain`` can take: capability, context, then health."""
    capable = [t for t in chain if not t.missing(needs)]
    if not capable:
        return capability_error(chain, needs)
    if not any(t.fits(needs) for t in capable):
        return context_error(capable, needs)
    names = ", ".join(t.id for t in capable)
    return NoHealthyTargetError(
        f"no healthy target can serve this request right now (tried {names}); retry later",
        events=skipped,
    )


def capability_error(pool: Sequence[Target], needs: RequestNeeds) -> CapabilityUnavailableError:
    """Name the capability that keeps every target in ``pool`` from serving the request."""
    if needs.target_id is not None:
        lacking = pool[0].missing(needs)  # pool[0] is the requested model
        others = " (nor do its fallbacks)" if len(pool) > 1 else ""
        return CapabilityUnavailableError(
            f"model {needs.target_id} does not support {_names(lacking)}{others}",
            capability=lacking[0],
        )
    needed = [c for c in Capability if c in needs.capabilities]
    absent = [c for c in needed if not any(t.has(c) for t in pool)]
    if absent:
        return CapabilityUnavailableError(
            f"no model supports {_names(absent)}", capability=absent[0]
        )
    return CapabilityUnavailableError(
        f"no model supports {' together with '.join(c.value for c in needed)}",
        capability=needed[-1],
    )


def context_error(capable: Sequence[Target], needs: RequestNeeds) -> ContextLengthExceededError:
    """Say how many tokens the request needs and the largest context on offer."""
    largest = max(t.context_length for t in capable)
    budget = f" + {needs.max_tokens} max_tokens" if needs.max_tokens else ""
    return ContextLengthExceededError(
        f"this request needs {needs.context_tokens} tokens ({needs.prompt_tokens} prompt{budget}) "
        f"but the largest context of a model that can serve it is {largest} tokens; "
        "shorten the prompt or lower max_tokens"
    )


def _names(capabilities: Sequence[Capability]) -> str:
    return ", ".join(c.value for c in capabilities)
