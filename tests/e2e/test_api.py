"""The demo graph through the official openai SDK and raw HTTP: answers, streams, errors."""

from __future__ import annotations

import json
import time

import httpx
import jsonschema
import openai
import pytest

from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from tests.graph import CLOUD_ID, DEEPSEEK_CONTEXT, DEFAULT_MAX_TOKENS, Deployment

pytestmark = pytest.mark.e2e
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def sdk(deployment: Deployment) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{deployment.base_url}/v1", api_key="unused", timeout=180, max_retries=0)


def test_chat_answers_paris(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(model=SMOLLM2_ID, messages=FRANCE, temperature=0, max_tokens=30)
    assert "Paris" in reply.choices[0].message.content
    assert reply.model == SMOLLM2_ID


def test_stream_delivers_the_same_answer(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=SMOLLM2_ID, messages=FRANCE, temperature=0, max_tokens=30, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "Paris" in text


def test_json_schema_output_validates(sdk: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["city", "stars"],
        "additionalProperties": False,
    }
    for model in (SMOLLM2_ID, DEEPSEEK_ID, CLOUD_ID):  # the cloud gets the client's own JSON
        reply = sdk.chat.completions.create(
            model=model, messages=FRANCE, max_tokens=60, temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_json_object_mode_constrains_output(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model=SMOLLM2_ID, messages=[{"role": "user", "content": "Describe Paris in one sentence."}],
        max_tokens=60, temperature=0, response_format={"type": "json_object"},
    )
    content, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
    assert content.startswith("{")  # prose without the constraint
    if finish == "stop":
        assert isinstance(json.loads(content), dict)


def test_embeddings_go_to_minilm_and_rank_meaning(sdk: openai.OpenAI) -> None:
    result = sdk.embeddings.create(model="auto", input=["king", "queen", "carburetor"])
    assert result.model == MINILM_ID
    king, queen, carburetor = (d.embedding for d in result.data)
    assert len(king) == 384
    assert _cos(king, queen) > _cos(king, carburetor)


def test_moderation_result_has_openai_shape(sdk: openai.OpenAI) -> None:
    result = sdk.moderations.create(input="I will find you and hurt you.")
    assert len(result.results) == 1
    categories = result.results[0].categories.model_dump(by_alias=True)
    assert {"harassment", "hate", "violence", "self-harm", "sexual"} <= set(categories)
    assert isinstance(result.results[0].flagged, bool)


def test_completions_endpoint(sdk: openai.OpenAI) -> None:
    reply = sdk.completions.create(model=DEEPSEEK_ID, prompt="Hello", max_tokens=8, extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 8


def test_a_request_without_max_tokens_gets_the_operators_default(sdk: openai.OpenAI, http: httpx.Client) -> None:
    reply = sdk.chat.completions.create(model=DEEPSEEK_ID, messages=FRANCE, extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == DEFAULT_MAX_TOKENS
    assert reply.choices[0].finish_reason == "length"
    legacy = sdk.completions.create(model=DEEPSEEK_ID, prompt="Hello", extra_body={"ignore_eos": True})
    assert legacy.usage.completion_tokens == 16  # the completions API's own default, as OpenAI's
    # the fuzzed body that used to generate until the context was full (minutes on the CPU)
    empty = http.post("/v1/chat/completions", json={"model": SMOLLM2_ID, "messages": [{"content": "", "role": "user"}]})
    assert empty.status_code == 200, empty.text
    assert empty.json()["usage"]["completion_tokens"] <= DEFAULT_MAX_TOKENS
    explicit = sdk.completions.create(model=DEEPSEEK_ID, prompt="Hello", max_tokens=200, extra_body={"ignore_eos": True})
    assert explicit.usage.completion_tokens == 200  # a client's own max_tokens is not capped by it


def test_models_carry_turnout_metadata(http: httpx.Client) -> None:
    cards = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert {SMOLLM2_ID, DEEPSEEK_ID, MINILM_ID, "cloud/standin/smollm2-standin"} <= set(cards)
    assert cards[MINILM_ID]["turnout"]["capabilities"] == ["embeddings"]
    assert cards[DEEPSEEK_ID]["turnout"]["family"] == "deepseek"
    assert cards[DEEPSEEK_ID]["turnout"]["context_length"] == DEEPSEEK_CONTEXT
    assert cards["cloud/standin/smollm2-standin"]["turnout"]["kind"] == "cloud"


def test_tokenize(http: httpx.Client) -> None:
    reply = http.post("/tokenize", json={"model": SMOLLM2_ID, "prompt": "Hello world"})
    assert reply.status_code == 200
    assert reply.json()["count"] == len(reply.json()["tokens"]) > 0


def test_health_and_ready(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
    assert http.get("/ready").json()["ready"] is True


@pytest.mark.parametrize(
    ("body", "status", "type_"),
    [
        (b"{not json", 400, "invalid_request_error"),
        (json.dumps({"model": SMOLLM2_ID}).encode(), 400, "invalid_request_error"),
        (json.dumps({"model": SMOLLM2_ID, "messages": "hi"}).encode(), 400, "invalid_request_error"),
        (json.dumps({"model": SMOLLM2_ID, "messages": FRANCE, "max_tokens": "many"}).encode(), 400, "invalid_request_error"),
        (json.dumps({"model": "local/llama/nope", "messages": FRANCE}).encode(), 404, "model_not_found"),
        (json.dumps({"model": "auto", "messages": FRANCE, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}).encode(), 400, "capability_unavailable"),
        (json.dumps({"model": SMOLLM2_ID, "messages": FRANCE, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}).encode(), 400, "invalid_request_error"),
        (json.dumps({"model": "auto", "messages": [{"role": "user", "content": "word " * 60000}]}).encode(), 413, "payload_too_large"),
    ],
)
def test_bad_input_gets_openai_errors(http: httpx.Client, body: bytes, status: int, type_: str) -> None:
    reply = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["type"] == type_
    assert error["message"]


def test_prompt_longer_than_every_context(http: httpx.Client) -> None:
    long = {"model": "auto", "messages": [{"role": "user", "content": "hi " * 12000}], "max_tokens": 10}
    reply = http.post("/v1/chat/completions", json=long)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "context_length_exceeded"


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


def test_client_disconnect_aborts_the_engine_request(deployment: Deployment, http: httpx.Client) -> None:
    """4000 tokens take minutes on the CPU; after a disconnect the engine must stop within seconds."""

    def running() -> float:
        text = httpx.get(deployment.metrics_url, timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("ray_vllm_num_requests_running{") and f'model_name="{SMOLLM2_ID}"' in line
        )

    body = {"model": SMOLLM2_ID, "messages": FRANCE, "max_tokens": 4000, "stream": True, "ignore_eos": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        chunks = reply.iter_lines()
        deadline = time.monotonic() + 60
        while running() < 1:
            assert time.monotonic() < deadline, "the request never showed as running"
            for _ in range(5):
                next(chunks)
    deadline = time.monotonic() + 60
    while running() > 0:
        assert time.monotonic() < deadline, "the engine kept generating after the client left"
        time.sleep(2)
