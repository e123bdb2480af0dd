from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.errors import ConfigError
from engine.protocol import Capability, ModelFormat, ModelRecord, ModelType, SourceKind
from router.policies import DEFAULT_POLICY
from router.protocol import RequestNeeds, SizeClass, TargetKind
from router.settings import (
    CircuitSettings,
    CloudModelSettings,
    RouterSettings,
    SizeThresholds,
)
from router.targets import (
    cloud_target,
    cloud_targets,
    estimate_parameters,
    local_target,
)


def record(name="smol", size_bytes=270_000_000, dtype="bfloat16", caps=(Capability.CHAT,)) -> ModelRecord:
    return ModelRecord(
        id=f"local/llama/{name}",
        name=name,
        family=ModelType.LLAMA,
        format=ModelFormat.SAFETENSORS,
        path=Path("/models") / name,
        source=SourceKind.PATH,
        source_ref=str(Path("/models") / name),
        size_bytes=size_bytes,
        architecture="LlamaForCausalLM",
        context_length=8192,
        dtype=dtype,
        capabilities=list(caps),
    )


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("bfloat16", 500),
        ("torch.float16", 500),
        ("float32", 250),
        ("auto", 500),
        ("int8", 1000),
        ("int4", 2000),
    ],
)
def test_estimate_parameters_by_dtype(dtype, expected):
    assert estimate_parameters(1000, dtype) == expected


def test_local_target_from_record():
    target = local_target(record(caps=(Capability.CHAT, Capability.TOOLS)))
    assert target.id == "local/llama/smol" and target.kind is TargetKind.LOCAL
    assert target.name == "smol" and target.family is ModelType.LLAMA and target.provider is None
    assert target.capabilities == {Capability.CHAT, Capability.TOOLS}
    assert target.context_length == 8192 and target.parameters == 135_000_000
    assert target.size is SizeClass.NANO and not target.is_cloud


@pytest.mark.parametrize(
    ("size_bytes", "size"),
    [(1_998_000_000, SizeClass.NANO), (2_000_000_000, SizeClass.MINI), (16_000_000_000, SizeClass.MINI),
     (20_000_000_000, SizeClass.LARGE)],
)
def test_local_target_size_from_bytes(size_bytes, size):
    assert local_target(record(size_bytes=size_bytes)).size is size


def test_local_target_overrides():
    thresholds = SizeThresholds(nano_max_params=100, mini_max_params=200_000_000)
    assert local_target(record(), thresholds=thresholds).size is SizeClass.MINI
    assert local_target(record(), size=SizeClass.LARGE).size is SizeClass.LARGE
    explicit = local_target(record(), parameters=70_000_000_000)
    assert explicit.parameters == 70_000_000_000 and explicit.size is SizeClass.LARGE


def test_cloud_target():
    target = cloud_target("openai", "gpt-4o-mini", [Capability.CHAT, Capability.TOOLS], 128_000)
    assert target.id == "cloud/openai/gpt-4o-mini" and target.kind is TargetKind.CLOUD
    assert target.provider == "openai" and target.name == "gpt-4o-mini" and target.family is None
    assert target.size is SizeClass.LARGE and target.is_cloud
    nano = cloud_target("openrouter", "meta/llama-3.2-1b", [Capability.CHAT], 8000, size=SizeClass.NANO)
    assert nano.id == "cloud/openrouter/meta/llama-3.2-1b" and nano.size is SizeClass.NANO


@pytest.mark.parametrize(("provider", "model"), [("Open AI", "m"), ("", "m"), ("openai", ""), ("openai", "a b")])
def test_cloud_target_rejects_bad_names(provider, model):
    with pytest.raises(ConfigError):
        cloud_target(provider, model, [Capability.CHAT], 10)


def test_target_matching():
    target = local_target(record(caps=(Capability.CHAT,)))
    needs = RequestNeeds(
        capabilities=frozenset({Capability.TOOLS, Capability.CHAT, Capability.JSON_SCHEMA}),
        prompt_tokens=8000,
        max_tokens=192,
    )
    assert target.missing(needs) == [Capability.JSON_SCHEMA, Capability.TOOLS]
    assert target.fits(needs)
    assert not target.fits(needs.model_copy(update={"max_tokens": 193}))


def test_targets_are_immutable():
    with pytest.raises(ValidationError):
        local_target(record()).context_length = 1


def test_router_settings_defaults_and_bounds():
    settings = RouterSettings()
    assert settings.policy == DEFAULT_POLICY == "least_loaded"
    assert settings.circuit == CircuitSettings(failure_threshold=5, cooldown_s=30.0, half_open_probes=1)
    with pytest.raises(ValidationError):
        RouterSettings(policy="random")
    with pytest.raises(ValidationError):
        RouterSettings(unknown=1)
    with pytest.raises(ValidationError):
        CircuitSettings(failure_threshold=0)
    with pytest.raises(ValidationError):
        CircuitSettings(cooldown_s=0)
    with pytest.raises(ValidationError):
        SizeThresholds(nano_max_params=10, mini_max_params=10)


def test_router_settings_from_plain_data():
    settings = RouterSettings.model_validate(
        {
            "policy": "first_eligible",
            "fallbacks": {"local/llama/a": ["local/llama/b", "cloud/openai/gpt-4o"]},
            "fallback_order": ["local/llama/b"],
            "circuit": {"failure_threshold": 3, "cooldown_s": 5, "half_open_probes": 2},
            "sizes": {"nano_max_params": 500_000_000},
            "size_overrides": {"local/llama/a": "mini"},
            "cloud_models": [
                {"provider": "openai", "model": "gpt-4o", "capabilities": ["chat", "tools"], "context_length": 128000}
            ],
        }
    )
    assert settings.size_overrides == {"local/llama/a": SizeClass.MINI}
    [target] = cloud_targets(settings.cloud_models)
    assert target.id == "cloud/openai/gpt-4o" and target.has(Capability.TOOLS)
    schema = RouterSettings.model_json_schema()
    assert schema["properties"]["policy"]["description"]
    with pytest.raises(ValidationError):
        CloudModelSettings(provider="openai", model="m", capabilities=[], context_length=1)
