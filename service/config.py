"""The one configuration schema: models, cloud providers, routing, limits, server and API keys.

A YAML file (``turnout serve --config FILE``) and environment variables (``TURNOUT_`` prefix,
``__`` between nested names, e.g. ``TURNOUT_SERVER__PORT=9000``) are two views of this schema;
environment values win. It is validated once, at start-up, and an invalid value fails with a
message naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from engine.config import EngineSettings
from engine.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from engine.errors import ClientError, ConfigError
from engine.protocol import Capability, parse_model_id, validate_name
from router.providers.settings import CloudProviderSettings
from router.settings import RouterSettings


DEFAULT_MAX_TOKENS = 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingSettings(_Strict):
    """Ray Serve autoscaling for a model's replicas."""

    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    target_ongoing_requests: float = Field(default=16, gt=0, description="Per replica.")
    upscale_delay_s: float = Field(default=30, ge=0, description="Load must last this long to add a replica.")
    downscale_delay_s: float = Field(
        default=600, ge=0, description="Load must stay low this long to remove a replica."
    )


class AffinitySettings(_Strict):
    """Prefix-affinity routing among a model's replicas (``routing: prefix_affinity``)."""

    block_chars: int = Field(
        default=256, ge=16, le=65536,
        description="Prompts are compared in blocks of this many characters; a prompt shorter "
        "than one block is load balanced.",
    )
    max_blocks: int = Field(default=64, ge=1, le=4096, description="Blocks of a prompt compared at most.")
    max_imbalance: float = Field(
        default=4, ge=0,
        description="Load guard: a prompt goes to the replica holding its prefix unless that "
        "replica has more than this many requests above the least loaded one.",
    )
    max_keys: int = Field(default=200_000, ge=1, description="Prefix blocks remembered per router.")
    probe_interval_s: float = Field(default=0.5, gt=0, description="How often replica loads are refreshed.")


class ModelSource(_Strict):
    """Where a model that is not in the store yet is fetched from, once, at start-up."""

    kind: Literal["huggingface", "gguf", "ollama", "path"] = Field(
        default="huggingface", description="The model store's source kind."
    )
    ref: str = Field(
        min_length=1,
        description="Hub repo id (huggingface), a .gguf file (gguf), an Ollama reference such as "
        "smollm2:135m (ollama), or a checkpoint directory (path), e.g. on the model-cache volume.",
    )
    revision: str | None = Field(default=None, description="Hub branch, tag or commit (huggingface).")


class AdapterSettings(_Strict):
    """A LoRA adapter of the model, registered in the store at start-up when it is missing."""

    name: str = Field(min_length=1, description="The adapter's name: its id is <model id>:<name>.")
    kind: Literal["huggingface", "path"] = Field(
        default="huggingface", description="huggingface: ref is a hub repo id; path: a PEFT directory (copied)."
    )
    ref: str = Field(min_length=1, description="Hub repo id, or a PEFT directory, e.g. on the model-cache volume.")
    revision: str | None = Field(default=None, description="Hub branch, tag or commit (huggingface).")


class ModelSettings(_Strict):
    """One served model: which registered model, how its engine runs, how many replicas."""

    id: str = Field(description="Registered model id, local/<family>/<name>.")
    source: ModelSource | None = Field(
        default=None, description="Fetch the model into the store under this id when it is missing."
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    replicas: int = Field(default=1, ge=1, le=1000, description="Fixed replica count.")
    autoscaling: AutoscalingSettings | None = Field(
        default=None, description="Autoscale instead of a fixed replica count."
    )
    max_ongoing_requests: int = Field(
        default=256, ge=1, le=100_000, description="Requests a replica accepts at once."
    )
    capabilities: list[Capability] | None = Field(
        default=None, description="Override the capabilities derived from the checkpoint."
    )
    num_cpus: float = Field(
        default=0.5, gt=0, description="Logical CPUs reserved per replica in Ray (CPU platform)."
    )
    num_gpus: float = Field(default=0, ge=0, description="GPUs per replica (CUDA: tensor_parallel_size).")
    routing: Literal["default", "prefix_affinity"] = Field(
        default="default",
        description="How a request picks one of this model's replicas. default: the least "
        "loaded (HAProxy's fewest connections for the edge model, Serve's power of two choices "
        "for others). prefix_affinity: the replica that already holds the prompt's prefix in "
        "vLLM's prefix cache, within a load guard (affinity).",
    )
    affinity: AffinitySettings = Field(default_factory=AffinitySettings)
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each replica reserves beside its CPUs/GPUs, e.g. a "
        "resource that only one worker group's nodes declare (ray start --resources), to place "
        "the model's replicas on those nodes.",
    )

    adapters: list[AdapterSettings] = Field(
        default_factory=list,
        description="LoRA adapters fetched into the store at start-up when missing (any adapter "
        "registered for the model is served; engine.max_loras must be at least 1).",
    )

    @model_validator(mode="after")
    def _valid_id(self) -> ModelSettings:
        try:
            parse_model_id(self.id)
            for adapter in self.adapters:
                validate_name(adapter.name)
        except ClientError as e:
            raise ValueError(e.message) from None
        if self.adapters and not self.engine.max_loras:
            raise ValueError(f"{self.id} lists adapters but its engine.max_loras is 0: set it to serve them")
        return self


class ServerSettings(_Strict):
    """Where the HTTP API listens."""

    host: str = Field(default="127.0.0.1", description="Bind address of Ray Serve's HTTP proxy.")
    port: int = Field(default=8000, ge=1, le=65535)
    dashboard_port: int = Field(default=8265, ge=1, le=65535)
    metrics_export_port: int = Field(default=8085, ge=1, le=65535, description="Prometheus text.")
    cors_origins: list[str] = Field(default_factory=list, description="CORS is off unless set.")
    data_path: Literal["direct", "ingress"] = Field(
        default="direct",
        description="direct: the replicas of one local model (edge_model) are also the HTTP "
        "entry, behind HAProxy, and stream its tokens to the client themselves; other targets "
        "are reached from there. ingress: an engine-less ingress deployment ahead of every "
        "replica (one more process on every stream). A graph without local models uses ingress.",
    )
    edge_model: str | None = Field(
        default=None,
        description="The local model whose replicas are the HTTP entry (data_path: direct); "
        "default: the first model with chat or completion.",
    )
    haproxy: bool = Field(
        default=True,
        description="turnout serve on a local Ray: run Ray Serve's HAProxy ingress and its "
        "throughput-optimised settings (RAY_SERVE_ENABLE_HA_PROXY, "
        "RAY_SERVE_THROUGHPUT_OPTIMIZED). On a cluster these are the nodes' environment.",
    )


class LimitsSettings(_Strict):
    """Caps on what one request may ask for, and on how many run at once."""

    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="Request body cap.")
    max_tokens_cap: int = Field(default=4096, ge=1, description="Largest max_tokens accepted.")
    default_max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens a local model generates for a request that sets no max_tokens "
        "(never more than the context left after the prompt); default: 1024, or max_tokens_cap "
        "if lower. Cloud providers keep their own.",
    )
    max_ongoing_requests: int = Field(
        default=1000, ge=1, description="Requests the ingress handles at once; more get 503."
    )
    first_token_timeout_s: float = Field(
        default=120, gt=0, description="A local target that sends nothing by then is skipped."
    )
    health_check_period_s: float = Field(default=10, gt=0, description="Replica health probes.")


    @property
    def output_default(self) -> int:
        """The output length of a request without max_tokens."""
        return self.default_max_tokens or min(DEFAULT_MAX_TOKENS, self.max_tokens_cap)

    @model_validator(mode="after")
    def _default_within_cap(self) -> LimitsSettings:
        if self.default_max_tokens is not None and self.default_max_tokens > self.max_tokens_cap:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_cap "
                f"({self.max_tokens_cap})"
            )
        return self


class ResponseCacheSettings(_Strict):
    """Answers to deterministic requests, kept by each entry replica (see service.cache)."""

    enabled: bool = Field(default=True, description="Cache answers at temperature 0 or with a seed.")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=0, description="Memory bound per entry replica.")
    ttl_s: float = Field(default=600, gt=0, description="An answer is served from the cache this long.")
    max_entry_bytes: int = Field(
        default=1024 * 1024, ge=0, description="Larger answers are not cached."
    )


class AuthSettings(_Strict):
    """API keys for the ingress; when none is set, the API is open (loopback default)."""

    api_keys: list[SecretStr] = Field(default_factory=list, description="Accepted keys.")
    api_keys_file: Path | None = Field(default=None, description="File with one key per line.")

    def keys(self) -> list[str]:
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file:
            keys += [line.strip() for line in self.api_keys_file.read_text().splitlines() if line.strip()]
        return keys


class TurnoutConfig(BaseSettings):
    """The whole configuration of a Turnout deployment."""

    model_config = SettingsConfigDict(
        env_prefix="TURNOUT_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    store_root: Path | None = Field(default=None, description="Model store; default $TURNOUT_HOME.")
    models: list[ModelSettings] = Field(default_factory=list, description="Served local models.")
    cloud_providers: list[CloudProviderSettings] = Field(default_factory=list)
    routing: RouterSettings = Field(default_factory=RouterSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    response_cache: ResponseCacheSettings = Field(default_factory=ResponseCacheSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings  # environment values win over the file

    @model_validator(mode="after")
    def _unique_and_known(self) -> TurnoutConfig:
        ids = [m.id for m in self.models]
        if len(ids) != len(set(ids)):
            raise ValueError(f"models: duplicate model ids in {ids}")
        if self.server.edge_model is not None and self.server.edge_model not in ids:
            raise ValueError(f"server.edge_model: {self.server.edge_model} is not one of the models")
        names = [p.name for p in self.cloud_providers]
        unknown = {m.provider for m in self.routing.cloud_models} - set(names)
        if unknown:
            raise ValueError(f"routing.cloud_models: unknown provider(s) {sorted(unknown)}")
        return self


def demo_models() -> list[ModelSettings]:
    """The embedded default: the three demo models on the CPU, one engine per core."""
    return [
        ModelSettings(id=SMOLLM2_ID, engine=EngineSettings(cpu_threads_bind="0")),
        ModelSettings(id=DEEPSEEK_ID, engine=EngineSettings(cpu_threads_bind="1")),
        ModelSettings(id=MINILM_ID, engine=EngineSettings(cpu_threads_bind="1")),
    ]


def demo_routing() -> dict[str, Any]:
    return {"fallbacks": {SMOLLM2_ID: [DEEPSEEK_ID], DEEPSEEK_ID: [SMOLLM2_ID]}}


def load_config(path: Path | None = None) -> TurnoutConfig:
    """Load and validate the configuration (the demo graph when ``path`` is None).

    Raises :class:`ConfigError` whose message names every invalid field.
    """
    data: dict[str, Any] = {"models": demo_models(), "routing": demo_routing()}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}", param="config") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping", param="config")
    try:
        return TurnoutConfig(**data)
    except ValidationError as e:
        raise ConfigError(f"invalid configuration{f' in {path}' if path else ''}:\n{_describe(e)}") from None


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(root)"
        lines.append(f"  {field}: {item['msg']}")
    return "\n".join(lines)

