"""The part of the configuration schema (:mod:`service.config`) that describes one served model:
its engine, source, adapters, replicas and routing among them; and the demo graph's models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import ClientError
from engine.launch.settings import EngineSettings
from engine.protocol import Capability, parse_model_id, validate_name
from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID


class Strict(BaseModel):
    """A section of the configuration: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class AutoscalingSettings(Strict):
    """Ray Serve autoscaling for a model's replicas."""

    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    target_ongoing_requests: float = Field(default=16, gt=0, description="Per replica.")
    upscale_delay_s: float = Field(default=30, ge=0, description="Load must last this long to add a replica.")
    downscale_delay_s: float = Field(
        default=600, ge=0, description="Load must stay low this long to remove a replica."
    )


class AffinitySettings(Strict):
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


class KvRoutingSettings(Strict):
    """KV-aware routing among a model's replicas (``routing: kv_aware``): each engine publishes
    the blocks of its prefix cache (vLLM's KV events), the router keeps an index of them and sends
    a prompt where the estimated time to its first token is lowest (``router.kv.cost``)."""

    prefill_s_per_token: float = Field(
        default=0.0005, gt=0, description="Cost model: seconds of prefill per uncached prompt token.",
    )
    decode_s_per_request: float = Field(
        default=0.002, ge=0, description="Cost model: seconds each running request adds to a replica's steps.",
    )
    max_imbalance: float = Field(
        default=4, ge=0,
        description="Load guard: a replica running more than this many requests beyond the least busy "
        "one is not chosen, whatever it holds.",
    )
    probe_interval_s: float = Field(default=0.5, gt=0, description="How often replica loads are refreshed.")
    load_window_s: float = Field(
        default=2, gt=0,
        description="A replica's load counts the requests this router sent it in the last this many "
        "seconds (at least; more if the replica reports more).",
    )
    stats_period_s: float = Field(
        default=2, gt=0, description="How often Serve asks replicas for their KV event endpoints.",
    )
    max_blocks: int = Field(default=1 << 18, ge=1, description="Blocks the router's index holds at most.")


class ModelSource(Strict):
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


class AdapterSettings(Strict):
    """A LoRA adapter of the model, registered in the store at start-up when it is missing."""

    name: str = Field(min_length=1, description="The adapter's name: its id is <model id>:<name>.")
    kind: Literal["huggingface", "path"] = Field(
        default="huggingface", description="huggingface: ref is a hub repo id; path: a PEFT directory (copied)."
    )
    ref: str = Field(min_length=1, description="Hub repo id, or a PEFT directory, e.g. on the model-cache volume.")
    revision: str | None = Field(default=None, description="Hub branch, tag or commit (huggingface).")


class ModelSettings(Strict):
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
    routing: Literal["default", "prefix_affinity", "kv_aware"] = Field(
        default="default",
        description="How a request picks one of this model's replicas. default: the least "
        "loaded (HAProxy's fewest connections for the edge model, Serve's power of two choices "
        "for others). prefix_affinity: the replica that already holds the prompt's prefix in "
        "vLLM's prefix cache, within a load guard (affinity), guessed from the prompts it sent. "
        "kv_aware: the replica with the lowest estimated time to first token, from what each "
        "engine's prefix cache holds (its KV events) and its load (kv).",
    )
    affinity: AffinitySettings = Field(default_factory=AffinitySettings)
    kv: KvRoutingSettings = Field(default_factory=KvRoutingSettings)
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


def demo_models() -> list[ModelSettings]:
    """The embedded default: the three demo models on the CPU, one engine per core."""
    return [
        ModelSettings(id=SMOLLM2_ID, engine=EngineSettings(cpu_threads_bind="0")),
        ModelSettings(id=DEEPSEEK_ID, engine=EngineSettings(cpu_threads_bind="1")),
        ModelSettings(id=MINILM_ID, engine=EngineSettings(cpu_threads_bind="1")),
    ]


