from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from engine.errors import ConfigError, ModelNotFoundError
from engine.protocol import Capability, ModelFormat, ModelRecord, ModelType, SourceKind
from router.errors import (
    CapabilityUnavailableError,
    ContextLengthExceededError,
    NoHealthyTargetError,
    SizeUnavailableError,
)
from router.planner import Router
from router.protocol import (
    CircuitState,
    FallbackReason,
    RequestNeeds,
    RouteEvent,
    RoutingPolicy,
    SizeClass,
    SkipReason,
    Target,
    TargetKind,
    TargetStats,
)
from router.settings import RouterSettings

C = Capability


def target(target_id: str, caps, context: int, size: SizeClass) -> Target:
    kind = TargetKind.CLOUD if target_id.startswith("cloud/") else TargetKind.LOCAL
    return Target(
        id=target_id, kind=kind, name=target_id.rsplit("/", 1)[-1],
        capabilities=frozenset(caps), context_length=context, size=size,
    )


SMALL = target("local/llama/small", {C.CHAT, C.TOOLS, C.JSON_SCHEMA}, 2048, SizeClass.NANO)
MID = target("local/llama/mid", {C.CHAT, C.JSON_SCHEMA}, 8192, SizeClass.MINI)
R1 = target("local/deepseek/r1", {C.CHAT, C.REASONING}, 32768, SizeClass.MINI)
MINILM = target("local/embedding/minilm", {C.EMBEDDINGS}, 512, SizeClass.NANO)
GPT = target("cloud/openai/gpt", {C.CHAT, C.TOOLS, C.JSON_SCHEMA, C.REASONING}, 128_000, SizeClass.LARGE)
ALL = [GPT, SMALL, MID, R1, MINILM]


def needs(*caps: Capability, prompt=100, max_tokens=None, model=None, size=None) -> RequestNeeds:
    return RequestNeeds(
        capabilities=frozenset(caps or {C.CHAT}), prompt_tokens=prompt, max_tokens=max_tokens,
        target_id=model, size=size,
    )


def ids(plan) -> list[str]:
    return [t.id for t in plan.targets]


@pytest.fixture
def router() -> Router:
    return Router(ALL)


def test_auto_chat_orders_locals_by_load_then_cloud(router):
    stats = {SMALL.id: TargetStats(in_flight=5), MID.id: TargetStats(in_flight=1)}
    plan = router.plan(needs(C.CHAT), stats)
    assert ids(plan) == [R1.id, MID.id, SMALL.id, GPT.id]
    assert plan.policy == "least_loaded" and plan.skipped == () and plan.primary == R1


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ((C.CHAT, C.TOOLS), [SMALL.id, GPT.id]),
        ((C.CHAT, C.JSON_SCHEMA), [SMALL.id, MID.id, GPT.id]),
        ((C.CHAT, C.REASONING), [R1.id, GPT.id]),
        ((C.EMBEDDINGS,), [MINILM.id]),
    ],
)
def test_auto_filters_by_capability_without_recording_skips(router, caps, expected):
    plan = router.plan(needs(*caps))
    assert ids(plan) == expected and plan.skipped == ()


def test_auto_missing_capability_names_it(router):
    with pytest.raises(CapabilityUnavailableError) as info:
        router.plan(needs(C.MODERATION))
    error = info.value
    assert error.status_code == 400 and error.type == "capability_unavailable"
    assert "moderation" in error.message and error.capability is C.MODERATION


def test_auto_capabilities_that_exist_only_apart(router):
    with pytest.raises(CapabilityUnavailableError) as info:
        router.plan(needs(C.EMBEDDINGS, C.TOOLS))
    assert info.value.message == "no model supports tools together with embeddings"


@pytest.mark.parametrize(
    ("size", "expected"),
    [(SizeClass.NANO, [SMALL.id]), (SizeClass.MINI, [MID.id, R1.id]), (SizeClass.LARGE, [GPT.id])],
)
def test_auto_size_restricts_candidates(router, size, expected):
    assert ids(router.plan(needs(C.CHAT, size=size))) == expected


def test_auto_size_without_a_capable_target(router):
    with pytest.raises(SizeUnavailableError) as info:
        router.plan(needs(C.CHAT, C.REASONING, size=SizeClass.NANO))
    assert info.value.status_code == 400 and "nano" in info.value.message


def test_auto_skips_targets_with_too_little_context(router):
    plan = router.plan(needs(C.CHAT, prompt=2000, max_tokens=100))
    assert ids(plan) == [MID.id, R1.id, GPT.id]
    assert plan.skipped == (RouteEvent(SMALL.id, SkipReason.CONTEXT_LENGTH),)
    assert plan.skipped[0].fallback_reason is FallbackReason.CONTEXT_LENGTH


def test_auto_context_exceeded_everywhere(router):
    with pytest.raises(ContextLengthExceededError) as info:
        router.plan(needs(C.CHAT, C.TOOLS, prompt=127_000, max_tokens=2000))
    error = info.value
    assert error.status_code == 400 and error.type == "context_length_exceeded"
    assert "129000" in error.message and "128000" in error.message


def test_auto_skips_unhealthy_and_open_circuits_but_keeps_half_open(router):
    stats = {
        SMALL.id: TargetStats(healthy=False),
        MID.id: TargetStats(circuit=CircuitState.OPEN),
        R1.id: TargetStats(circuit=CircuitState.HALF_OPEN),
    }
    plan = router.plan(needs(C.CHAT), stats)
    assert ids(plan) == [R1.id, GPT.id]
    assert plan.skipped == (
        RouteEvent(SMALL.id, SkipReason.UNHEALTHY),
        RouteEvent(MID.id, SkipReason.CIRCUIT_OPEN),
    )
    assert {e.fallback_reason for e in plan.skipped} == {FallbackReason.UNAVAILABLE}


def test_auto_nothing_healthy_is_a_503_with_the_route(router):
    stats = {SMALL.id: TargetStats(healthy=False), GPT.id: TargetStats(circuit=CircuitState.OPEN)}
    with pytest.raises(NoHealthyTargetError) as info:
        router.plan(needs(C.CHAT, C.TOOLS), stats)
    error = info.value
    assert error.status_code == 503 and error.type == "no_healthy_target"
    assert error.route == f"{GPT.id}=circuit_open, {SMALL.id}=unhealthy"  # configured order
    assert len(error.events) == 2


def test_first_eligible_follows_configured_order():
    settings = RouterSettings(policy="first_eligible", fallback_order=[GPT.id, MID.id])
    router = Router(ALL, settings)
    assert [t.id for t in router.targets] == [GPT.id, MID.id, SMALL.id, R1.id, MINILM.id]
    stats = {GPT.id: TargetStats(in_flight=100)}
    plan = router.plan(needs(C.CHAT), stats)
    assert ids(plan) == [GPT.id, MID.id, SMALL.id, R1.id] and plan.policy == "first_eligible"


def test_injected_policy_is_used():
    class Reverse(RoutingPolicy):
        name = "reverse"

        def order(self, candidates: Sequence[Target], stats: Mapping[str, TargetStats], needs):
            return list(reversed(candidates))

    plan = Router(ALL, policy=Reverse()).plan(needs(C.CHAT, C.TOOLS))
    assert ids(plan) == [SMALL.id, GPT.id] and plan.policy == "reverse"


def test_explicit_unknown_model_is_404(router):
    with pytest.raises(ModelNotFoundError) as info:
        router.plan(needs(model="local/llama/nope"))
    assert info.value.status_code == 404 and info.value.type == "model_not_found"


def test_explicit_model_goes_first_then_its_fallbacks_with_cloud_last():
    settings = RouterSettings(fallbacks={MID.id: [GPT.id, SMALL.id, MID.id, SMALL.id, "local/llama/gone"]})
    router = Router(ALL, settings)
    stats = {SMALL.id: TargetStats(in_flight=0), MID.id: TargetStats(in_flight=99)}
    plan = router.plan(needs(model=MID.id), stats)
    assert ids(plan) == [MID.id, SMALL.id, GPT.id] and plan.policy == "explicit"


def test_explicit_cloud_model_stays_first():
    router = Router(ALL, RouterSettings(fallbacks={GPT.id: [MID.id]}))
    assert ids(router.plan(needs(model=GPT.id))) == [GPT.id, MID.id]


def test_explicit_without_own_fallbacks_uses_the_global_order():
    router = Router(ALL, RouterSettings(fallback_order=[GPT.id, R1.id, MID.id]))
    assert ids(router.plan(needs(model=MID.id))) == [MID.id, R1.id, GPT.id]
    assert ids(Router(ALL).plan(needs(model=MID.id))) == [MID.id]


def test_explicit_model_skipped_with_reasons_then_fallbacks():
    router = Router(ALL, RouterSettings(fallbacks={MID.id: [SMALL.id, R1.id, GPT.id]}))
    stats = {MID.id: TargetStats(circuit=CircuitState.OPEN)}
    plan = router.plan(needs(C.CHAT, C.TOOLS, model=MID.id), stats)
    assert ids(plan) == [SMALL.id, GPT.id]
    assert plan.skipped == (
        RouteEvent(MID.id, SkipReason.MISSING_CAPABILITY),
        RouteEvent(R1.id, SkipReason.MISSING_CAPABILITY),
    )
    plan = router.plan(needs(C.CHAT, model=MID.id), stats)
    assert ids(plan) == [SMALL.id, R1.id, GPT.id]
    assert plan.skipped == (RouteEvent(MID.id, SkipReason.CIRCUIT_OPEN),)


def test_explicit_model_lacking_a_capability(router):
    with pytest.raises(CapabilityUnavailableError) as info:
        router.plan(needs(C.CHAT, C.TOOLS, model=MID.id))
    assert info.value.message == f"model {MID.id} does not support tools"
    assert info.value.param == "tools"
    with_fallback = Router(ALL, RouterSettings(fallbacks={MID.id: [R1.id]}))
    with pytest.raises(CapabilityUnavailableError) as info:
        with_fallback.plan(needs(C.CHAT, C.JSON_SCHEMA, C.TOOLS, model=R1.id))
    assert "json_schema, tools" in info.value.message
    assert info.value.param == "response_format"


def test_explicit_context_too_long(router):
    with pytest.raises(ContextLengthExceededError) as info:
        router.plan(needs(C.CHAT, prompt=2000, max_tokens=49, model=SMALL.id))
    assert "2049" in info.value.message and "2048" in info.value.message
    assert ids(router.plan(needs(C.CHAT, prompt=2000, max_tokens=48, model=SMALL.id))) == [SMALL.id]


def test_explicit_unhealthy_without_fallbacks_is_503(router):
    with pytest.raises(NoHealthyTargetError) as info:
        router.plan(needs(model=SMALL.id), {SMALL.id: TargetStats(healthy=False)})
    assert info.value.route == f"{SMALL.id}=unhealthy"


def test_explicit_ignores_size(router):
    assert ids(router.plan(needs(model=GPT.id, size=SizeClass.NANO))) == [GPT.id]


def test_duplicate_targets_are_a_config_error():
    with pytest.raises(ConfigError):
        Router([SMALL, SMALL])


def test_dangling_references():
    settings = RouterSettings(fallbacks={"local/llama/x": [MID.id, "cloud/y/z"]}, fallback_order=["a", MID.id])
    assert Router(ALL, settings).dangling_references == ["a", "cloud/y/z", "local/llama/x"]


def test_target_lookup(router):
    assert router.target(MID.id) is MID
    assert router.fallback_chain(SMALL.id) == [SMALL]


def record(name: str, size_bytes: int, caps) -> ModelRecord:
    return ModelRecord(
        id=f"local/llama/{name}", name=name, family=ModelType.LLAMA, format=ModelFormat.SAFETENSORS,
        path=Path("/m") / name, source=SourceKind.PATH, source_ref="/m", size_bytes=size_bytes,
        architecture="LlamaForCausalLM", context_length=4096, dtype="bfloat16", capabilities=list(caps),
    )


def test_build_from_records_and_settings():
    settings = RouterSettings.model_validate(
        {
            "size_overrides": {"local/llama/big": "large"},
            "cloud_models": [
                {"provider": "openai", "model": "gpt-4o-mini", "capabilities": ["chat"],
                 "context_length": 128000, "size": "mini"}
            ],
        }
    )
    records = [record("tiny", 270_000_000, [C.CHAT]), record("big", 270_000_000, [C.CHAT])]
    router = Router.build(records, settings)
    assert [t.id for t in router.targets] == ["local/llama/tiny", "local/llama/big", "cloud/openai/gpt-4o-mini"]
    assert ids(router.plan(needs(size=SizeClass.NANO))) == ["local/llama/tiny"]
    assert ids(router.plan(needs(size=SizeClass.LARGE))) == ["local/llama/big"]
    assert ids(router.plan(needs(size=SizeClass.MINI))) == ["cloud/openai/gpt-4o-mini"]
