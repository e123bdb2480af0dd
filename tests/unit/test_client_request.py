"""The HTTP entry's one validated object (:func:`service.api.parsing.client_request`)."""

from __future__ import annotations

import pytest

from engine.errors import ClientError
from engine.protocol import Capability
from router.protocol import Endpoint, SizeClass
from service.api.parsing import client_request
from service.config import LimitsSettings
from service.serve_overrides.openai_types import ChatCompletionRequest

LIMITS = LimitsSettings()
CHAT = {"model": "auto:mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7,
        "response_format": {"type": "json_object"}}


def test_a_chat_body_becomes_the_engine_request_and_its_needs_at_once() -> None:
    request = client_request(Endpoint.CHAT, CHAT, LIMITS, ChatCompletionRequest, size_hint="large")
    assert request.body is CHAT and request.endpoint is Endpoint.CHAT
    assert isinstance(request.engine, ChatCompletionRequest) and request.engine.max_tokens == 7
    assert request.needs.size is SizeClass.MINI  # the alias wins over the header
    assert request.needs.max_tokens == 7 and request.needs.target_id is None
    assert request.needs.capabilities == {Capability.CHAT, Capability.JSON_SCHEMA}


def test_an_invalid_body_fails_before_any_needs_are_derived() -> None:
    with pytest.raises(ClientError) as caught:
        client_request(Endpoint.CHAT, {**CHAT, "max_tokens": "many"}, LIMITS, ChatCompletionRequest)
    assert caught.value.param == "max_tokens"


def test_a_moderation_has_needs_and_no_engine_request() -> None:
    request = client_request(Endpoint.MODERATIONS, {"model": "auto", "input": "hi"}, LIMITS)
    assert request.engine is None and request.needs.capabilities == {Capability.MODERATION}
