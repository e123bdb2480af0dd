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
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from engine.errors import ConfigError
from engine.store.demo import DEEPSEEK_ID, SMOLLM2_ID
from router.providers.settings import CloudProviderSettings
from router.settings import RouterSettings
from service.model_config import ModelSettings, demo_models
from service.model_config import Strict as _Strict

DEFAULT_MAX_TOKENS = 1024


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

