"""The router: from a request's needs and live stats to a route plan.

Explicit model: the model, then its fallbacks (its own list, else the global order) with cloud
targets last; the policy does not reorder them. Auto: every target with the needed capabilities
(and size, when one is asked for) and enough context that is healthy with a circuit that is not
open, ordered by the policy.

A LoRA adapter (``<base id>:<name>``, looked up in ``adapters`` when it is asked for, so adapters
registered after start are found) is a target served by its base model's backend, with its base's
capabilities and context. Auto routing never picks one, and its fallbacks are only those listed
for it in ``settings.fallbacks``: another model would not answer as the adapter does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from engine.errors import ConfigError, ModelNotFoundError
from engine.lora.adapter import is_adapter_id, parse_adapter_id
from engine.protocol import ModelRecord
from router.errors import SizeUnavailableError
from router.policies import make_policy
from router.protocol import RequestNeeds, RoutePlan, RoutingPolicy, Target, TargetStats
from router.screening import capability_error, explain_empty, screen
from router.settings import RouterSettings
from router.targets import cloud_targets, local_target

EXPLICIT = "explicit"
_NO_STATS: Mapping[str, TargetStats] = MappingProxyType({})
AdapterIndex = Callable[[], Mapping[str, str]]  # the registered adapters now: adapter id -> base id


class Router:
    """Plans routes over a fixed set of targets; rebuild it when the set of targets changes.

    ``targets`` are in registration order; the configured order is ``settings.fallback_order``
    first, then the rest in registration order. ``policy`` defaults to ``settings.policy``.
    """

    def __init__(
        self,
        targets: Iterable[Target],
        settings: RouterSettings | None = None,
        policy: RoutingPolicy | None = None,
        adapters: AdapterIndex | None = None,
    ) -> None:
        self._adapters = adapters
        self._settings = settings or RouterSettings()
        self._policy = policy or make_policy(self._settings.policy)
        self._by_id = _index(targets)
        self._ordered = _configured_order(self._by_id, self._settings.fallback_order)
        # auto routing's static filter (capabilities, then size), memoised: the targets are fixed
        self._eligible: dict[tuple[frozenset, object], tuple[list[Target], list[Target]]] = {}

    @classmethod
    def build(
        cls,
        records: Iterable[ModelRecord],
        settings: RouterSettings | None = None,
        policy: RoutingPolicy | None = None,
        adapters: AdapterIndex | None = None,
    ) -> Router:
        """A router over local models from the store plus the cloud models in ``settings``, and
        the adapters of those local models that ``adapters`` lists."""
        settings = settings or RouterSettings()
        local = [
            local_target(r, thresholds=settings.sizes, size=settings.size_overrides.get(r.id))
            for r in records
        ]
        return cls([*local, *cloud_targets(settings.cloud_models)], settings, policy, adapters)

    @property
    def targets(self) -> tuple[Target, ...]:
        """All targets, in configured order."""
        return self._ordered

    @property
    def policy(self) -> RoutingPolicy:
        return self._policy

    @property
    def dangling_references(self) -> list[str]:
        """Ids named in the fallback settings that no target has (worth a warning at start-up)."""
        named = [*self._settings.fallback_order, *self._settings.fallbacks]
        named += [i for ids in self._settings.fallbacks.values() for i in ids]
        # adapters may be registered after start; only their base must be here
        return sorted({i for i in named if (i.rpartition(":")[0] if is_adapter_id(i) else i) not in self._by_id})

    def target(self, target_id: str) -> Target:
        """The target with ``target_id`` (a model, or an adapter of a local one); raises
        ModelNotFoundError (404) if there is none."""
        found = self._by_id.get(target_id)
        if found is None and is_adapter_id(target_id):
            found = self._adapter(target_id, (self._adapters or dict)().get(target_id))
        if found is None:
            raise ModelNotFoundError(f"the model {target_id!r} does not exist", param="model")
        return found

    def adapter_targets(self) -> list[Target]:
        """The registered adapters of this router's local models, by id."""
        index = (self._adapters or dict)()
        found = (self._adapter(i, base) for i, base in sorted(index.items()))
        return [t for t in found if t is not None]

    def _adapter(self, adapter_id: str, base_id: str | None) -> Target | None:
        base = self._by_id.get(base_id or "")
        if base is None or base.is_cloud:
            return None
        return base.model_copy(update={"id": adapter_id, "name": parse_adapter_id(adapter_id)[1], "base": base.id})

    def plan(self, needs: RequestNeeds, stats: Mapping[str, TargetStats] = _NO_STATS) -> RoutePlan:
        """The targets to try for ``needs``, best first, with the reasons others were skipped.

        Raises ModelNotFoundError, CapabilityUnavailableError, SizeUnavailableError,
        ContextLengthExceededError (all 4xx) or NoHealthyTargetError (503).
        """
        if needs.target_id is not None:
            return self._plan_explicit(needs, stats)
        return self._plan_auto(needs, stats)

    def fallback_chain(self, target_id: str) -> list[Target]:
        """``target_id`` and its fallbacks in the order they are tried (local before cloud)."""
        first = self.target(target_id)
        default = () if first.base else self._settings.fallback_order
        configured = self._settings.fallbacks.get(target_id, default)
        known = [i for i in dict.fromkeys(configured) if i in self._by_id and i != target_id]
        rest = sorted((self._by_id[i] for i in known), key=lambda t: t.is_cloud)
        return [first, *rest]

    def _plan_explicit(self, needs: RequestNeeds, stats: Mapping[str, TargetStats]) -> RoutePlan:
        chain = self.fallback_chain(needs.target_id or "")
        kept, skipped = screen(chain, needs, stats)
        if not kept:
            raise explain_empty(chain, needs, skipped)
        return RoutePlan(targets=tuple(kept), skipped=tuple(skipped), policy=EXPLICIT)

    def _plan_auto(self, needs: RequestNeeds, stats: Mapping[str, TargetStats]) -> RoutePlan:
        capable, sized = self._eligible_for(needs)
        if not capable:
            raise capability_error(self._ordered, needs)
        if not sized:
            raise _size_error(needs)
        kept, skipped = screen(sized, needs, stats)
        if not kept:
            raise explain_empty(sized, needs, skipped)
        ordered = self._policy.order(kept, stats, needs)
        return RoutePlan(targets=tuple(ordered), skipped=tuple(skipped), policy=self._policy.name)

    def _eligible_for(self, needs: RequestNeeds) -> tuple[list[Target], list[Target]]:
        """Targets with every needed capability, and those of them of the wanted size."""
        key = (needs.capabilities, needs.size)
        if key not in self._eligible:
            capable = [t for t in self._ordered if not t.missing(needs)]
            sized = [t for t in capable if needs.size is None or t.size is needs.size]
            self._eligible[key] = (capable, sized)
        return self._eligible[key]


def _index(targets: Iterable[Target]) -> dict[str, Target]:
    by_id: dict[str, Target] = {}
    for target in targets:
        if target.id in by_id:
            raise ConfigError(f"duplicate target id {target.id!r}", param="targets")
        by_id[target.id] = target
    return by_id


def _configured_order(by_id: Mapping[str, Target], preferred: Iterable[str]) -> tuple[Target, ...]:
    first = [i for i in dict.fromkeys(preferred) if i in by_id]
    return tuple(by_id[i] for i in dict.fromkeys([*first, *by_id]))


def _size_error(needs: RequestNeeds) -> SizeUnavailableError:
    wanted = needs.size.value if needs.size else "such"
    capabilities = ", ".join(sorted(c.value for c in needs.capabilities))
    return SizeUnavailableError(f"no {wanted} model supports {capabilities}", param="model")

