"""The official ``openai`` SDK against the app, in process (ASGI transport, no network)."""

from __future__ import annotations

import httpx
import openai
import pytest

from service.api.app import create_app
from service.config import AuthSettings, TurnoutConfig
from testkit.fakes import (
    CLOUD,
    EMBED,
    JSON_MINI,
    NANO,
    FakeBackend,
    build_gateway,
    verdict,
)

KEY = "sk-sdk-test-key"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def sdk():
    stack = build_gateway(backends={JSON_MINI: FakeBackend(JSON_MINI, content=verdict(hate=True))})
    app = create_app(stack.gateway, TurnoutConfig(models=[], auth=AuthSettings(api_keys=[KEY])))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://turnout")
    client = openai.AsyncOpenAI(base_url="http://turnout/v1", api_key=KEY, http_client=http, max_retries=0)
    yield client
    await client.close()


async def test_chat(sdk):
    raw = await sdk.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-turnout-model"] == NANO
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello"
    assert completion.model == NANO
    assert completion.usage.total_tokens == 7


async def test_streaming_chat(sdk):
    stream = await sdk.chat.completions.create(model=NANO, messages=HELLO, stream=True)
    parts = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(parts) == "Hello"


async def test_embeddings(sdk):
    result = await sdk.embeddings.create(model="auto", input=["a", "b"])
    assert result.model == EMBED
    assert [d.embedding for d in result.data] == [[0.1, 0.2, 0.3]] * 2


async def test_moderations_through_a_chat_model(sdk):
    result = await sdk.moderations.create(input="something hateful")
    assert result.model == JSON_MINI
    assert result.results[0].flagged is True
    assert result.results[0].categories.hate is True
    assert result.results[0].categories.violence is False


async def test_moderations_through_the_cloud(sdk):
    result = await sdk.moderations.create(model=CLOUD, input="x")
    assert result.results[0].flagged is False


async def test_models_list(sdk):
    page = await sdk.models.list()
    ids = [m.id for m in page.data]
    assert ids[0] == NANO and CLOUD in ids
    model = await sdk.models.retrieve(EMBED)
    assert model.id == EMBED


async def test_errors_become_sdk_exceptions(sdk):
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.chat.completions.create(model="local/llama/missing", messages=HELLO)
    assert info.value.body["type"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(model="auto", messages=[])


async def test_a_wrong_key_is_an_authentication_error(sdk):
    with pytest.raises(openai.AuthenticationError):
        await sdk.with_options(api_key="sk-wrong").models.list()
