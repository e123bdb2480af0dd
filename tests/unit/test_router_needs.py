import pytest

from engine.errors import ClientError, ModelNotFoundError
from engine.protocol import Capability
from router.needs import (
    ModelSelection,
    derive_needs,
    estimate_prompt_tokens,
    parse_model,
    parse_size,
)
from router.protocol import Endpoint, SizeClass

CHAT = [{"role": "user", "content": "Hello there, how are you?"}]


@pytest.mark.parametrize(
    ("model", "hint", "expected"),
    [
        ("auto", None, ModelSelection()),
        (None, None, ModelSelection()),
        ("auto", "MINI", ModelSelection(size=SizeClass.MINI)),
        ("auto", " ", ModelSelection()),
        ("auto:reasoning", None, ModelSelection(reasoning=True)),
        ("auto:nano", None, ModelSelection(size=SizeClass.NANO)),
        ("auto:large", "nano", ModelSelection(size=SizeClass.LARGE)),
        ("auto:reasoning:mini", None, ModelSelection(size=SizeClass.MINI, reasoning=True)),
        ("auto:reasoning", "large", ModelSelection(size=SizeClass.LARGE, reasoning=True)),
        ("local/llama/x", "nano", ModelSelection(target_id="local/llama/x")),
        ("cloud/openai/gpt-4o", None, ModelSelection(target_id="cloud/openai/gpt-4o")),
    ],
)
def test_parse_model(model, hint, expected):
    assert parse_model(model, hint) == expected


@pytest.mark.parametrize("model", ["auto:huge", "auto:", "auto:nano:mini", "auto:reasoning:reasoning"])
def test_unknown_alias_is_model_not_found(model):
    with pytest.raises(ModelNotFoundError) as info:
        parse_model(model)
    assert info.value.status_code == 404 and info.value.param == "model"


def test_invalid_size_hint_is_a_client_error_even_for_explicit_models():
    with pytest.raises(ClientError) as info:
        parse_model("local/llama/x", "gigantic")
    assert info.value.status_code == 400 and "gigantic" in info.value.message
    assert parse_size(None) is None


def test_plain_chat_needs_chat_and_is_auto():
    needs = derive_needs(Endpoint.CHAT, {"model": "auto", "messages": CHAT}, prompt_tokens=12)
    assert needs.capabilities == {Capability.CHAT}
    assert needs.is_auto and needs.prompt_tokens == 12 and needs.max_tokens is None
    assert needs.context_tokens == 12


@pytest.mark.parametrize(
    ("extra", "capability"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, Capability.JSON_SCHEMA),
        ({"response_format": {"type": "json_object"}}, Capability.JSON_SCHEMA),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, Capability.TOOLS),
        ({"functions": [{"name": "f"}]}, Capability.TOOLS),
        ({"reasoning_effort": "low"}, Capability.REASONING),
        ({"model": "auto:reasoning"}, Capability.REASONING),
    ],
)
def test_chat_capabilities(extra, capability):
    body = {"model": "auto", "messages": CHAT, **extra}
    assert derive_needs(Endpoint.CHAT, body).capabilities == {Capability.CHAT, capability}


@pytest.mark.parametrize(
    "extra",
    [{"response_format": {"type": "text"}}, {"tools": []}, {"tools": None}, {"reasoning_effort": None}],
)
def test_features_not_asked_for_add_nothing(extra):
    body = {"model": "auto", "messages": CHAT, **extra}
    assert derive_needs(Endpoint.CHAT, body).capabilities == {Capability.CHAT}


@pytest.mark.parametrize(
    ("endpoint", "capability"),
    [
        (Endpoint.COMPLETIONS, Capability.COMPLETION),
        (Endpoint.EMBEDDINGS, Capability.EMBEDDINGS),
        (Endpoint.MODERATIONS, Capability.MODERATION),
    ],
)
def test_endpoint_base_capability(endpoint, capability):
    needs = derive_needs(endpoint, {"model": "m", "prompt": "hi", "input": "hi"})
    assert needs.capabilities == {capability} and needs.target_id == "m"


def test_embeddings_ignore_generation_fields():
    body = {"model": "auto", "input": "x", "max_tokens": 50, "tools": [{"type": "function"}]}
    needs = derive_needs(Endpoint.EMBEDDINGS, body, prompt_tokens=3)
    assert needs.capabilities == {Capability.EMBEDDINGS} and needs.max_tokens is None


def test_max_completion_tokens_wins_over_max_tokens():
    body = {"messages": CHAT, "max_tokens": 10, "max_completion_tokens": 20}
    needs = derive_needs(Endpoint.CHAT, body, prompt_tokens=5)
    assert needs.max_tokens == 20 and needs.context_tokens == 25


@pytest.mark.parametrize("value", [-1, "10", 1.5, True])
def test_bad_max_tokens_is_a_client_error(value):
    with pytest.raises(ClientError) as info:
        derive_needs(Endpoint.CHAT, {"messages": CHAT, "max_tokens": value})
    assert info.value.param == "max_tokens"


def test_non_string_model_is_a_client_error():
    with pytest.raises(ClientError) as info:
        derive_needs(Endpoint.CHAT, {"model": 3, "messages": CHAT})
    assert info.value.param == "model"


def test_size_precedence_alias_then_field_then_header():
    body = {"model": "auto", "messages": CHAT}
    assert derive_needs(Endpoint.CHAT, body, size_hint="nano").size is SizeClass.NANO
    body["size"] = "mini"
    assert derive_needs(Endpoint.CHAT, body, size_hint="nano").size is SizeClass.MINI
    body["model"] = "auto:large"
    assert derive_needs(Endpoint.CHAT, body, size_hint="nano").size is SizeClass.LARGE


def test_negative_measured_prompt_tokens_is_a_bug():
    with pytest.raises(ValueError):
        derive_needs(Endpoint.CHAT, {"messages": CHAT}, prompt_tokens=-1)


def test_estimate_chat_counts_text_parts_tool_calls_and_tools():
    base = estimate_prompt_tokens(Endpoint.CHAT, {"messages": [{"role": "user", "content": "a" * 400}]})
    assert base == 100 + 4 * 2
    parts = [{"type": "text", "text": "a" * 400}, {"type": "image_url", "image_url": {"url": "x" * 9999}}]
    assert estimate_prompt_tokens(Endpoint.CHAT, {"messages": [{"role": "user", "content": parts}]}) == base
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "f"}}]}
    with_call = estimate_prompt_tokens(Endpoint.CHAT, {"messages": [{"role": "user", "content": "a" * 400}, call]})
    assert with_call > base + 4
    with_tools = estimate_prompt_tokens(
        Endpoint.CHAT, {"messages": [{"role": "user", "content": "a" * 400}], "tools": [{"type": "function"}]}
    )
    assert with_tools > base


def test_estimate_without_messages_is_zero():
    assert estimate_prompt_tokens(Endpoint.CHAT, {}) == 0
    assert estimate_prompt_tokens(Endpoint.EMBEDDINGS, {"input": []}) == 0


@pytest.mark.parametrize(
    ("endpoint", "body", "tokens"),
    [
        (Endpoint.COMPLETIONS, {"prompt": "a" * 41}, 11),
        (Endpoint.COMPLETIONS, {"prompt": ["a" * 8, "a" * 80]}, 20),
        (Endpoint.COMPLETIONS, {"prompt": [1, 2, 3]}, 3),
        (Endpoint.EMBEDDINGS, {"input": [[1, 2], [1, 2, 3, 4, 5]]}, 5),
        (Endpoint.EMBEDDINGS, {"input": ["short", "a" * 400]}, 100),
        (Endpoint.MODERATIONS, {"input": [{"type": "text", "text": "a" * 40}]}, 10),
    ],
)
def test_estimate_batched_inputs_takes_the_longest(endpoint, body, tokens):
    assert estimate_prompt_tokens(endpoint, body) == tokens
    assert derive_needs(endpoint, body).prompt_tokens == tokens
