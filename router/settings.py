"""Router settings: plain pydantic models embedded in the service's one configuration schema.

Nothing here reads the environment; the service's schema decides where values come from.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.protocol import Capability
from router.policies import DEFAULT_POLICY, POLICIES
from router.protocol import SizeClass


class CircuitSettings(BaseModel):
    """When a target's circuit breaker opens, how long it stays open, and how it probes."""

    model_config = ConfigDict(extra="forbid")

    failure_threshold: int = Field(
        default=5, ge=1, le=10_000, description="Consecutive failures that open the circuit."
    )
    cooldown_s: float = Field(
        default=30.0, gt=0, le=86_400, description="Seconds open before probing (half-open)."
    )
    half_open_probes: int = Field(
        default=1, ge=1, le=1_000, description="Requests let through at once while half-open."
    )


class SizeThresholds(BaseModel):
    """Parameter counts that separate the size classes: nano < mini < large."""

    model_config = ConfigDict(extra="forbid")

    nano_max_params: int = Field(
        default=1_000_000_000, ge=1, description="Models with fewer parameters are nano."
    )
    mini_max_params: int = Field(
        default=10_000_000_000,
        ge=1,
        description="Models with fewer parameters (and not nano) are mini; the rest are large.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SizeThresholds:
        if self.nano_max_params >= self.mini_max_params:
            raise ValueError("nano_max_params must be smaller than mini_max_params")
        return self

    def classify(self, parameters: int) -> SizeClass:
        """The size class of a model with ``parameters`` parameters."""
        if parameters < self.nano_max_params:
            return SizeClass.NANO
        if parameters < self.mini_max_params:
            return SizeClass.MINI
        return SizeClass.LARGE


class CloudModelSettings(BaseModel):
    """A cloud model the router may use; its id is ``cloud/<provider>/<model>``."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Provider name (e.g. openai)."
    )
    model: str = Field(
        min_length=1, max_length=200, pattern=r"^\S+$", description="Upstream model name."
    )
    capabilities: list[Capability] = Field(
        min_length=1, description="What the upstream model supports."
    )
    context_length: int = Field(ge=1, description="Upstream context window in tokens.")
    size: SizeClass = Field(default=SizeClass.LARGE, description="Size class for auto:<size>.")


class RouterSettings(BaseModel):
    """How requests are matched to targets and moved between them on failure."""

    model_config = ConfigDict(extra="forbid")

    policy: str = Field(
        default=DEFAULT_POLICY,
        description=f"Routing policy for auto requests; one of: {', '.join(sorted(POLICIES))}.",
    )
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per-model fallback target ids, tried in order after the model itself.",
    )
    fallback_order: list[str] = Field(
        default_factory=list,
        description=(
            "Global preference order of target ids: the fallbacks of models without their own "
            "entry, and the configured order for auto routing (unlisted targets follow)."
        ),
    )
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)
    sizes: SizeThresholds = Field(default_factory=SizeThresholds)
    size_overrides: dict[str, SizeClass] = Field(
        default_factory=dict, description="Explicit size class by local model id (wins over sizes)."
    )
    cloud_models: list[CloudModelSettings] = Field(
        default_factory=list, description="Cloud models available as targets (after local ones)."
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in POLICIES:
            known = ", ".join(sorted(POLICIES))
            raise ValueError(f"unknown routing policy {value!r} (one of {known})")
        return value
