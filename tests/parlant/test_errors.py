"""Parlant-friendly failures: a clear exception for an unreachable backend, a 4xx, a 5xx and an
answer that never validates; retries where Parlant's own adapters retry; never a hang."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from parlant.core.common import DefaultBaseModel
from turnout_parlant import (
    GenerationSettings,
    TurnoutClientError,
    TurnoutConnectionError,
    TurnoutError,
    TurnoutNLPService,
    TurnoutSchemaError,
    TurnoutServerError,
    turnout_nlp_service,
)
from turnout_parlant.client import TurnoutClient
from turnout_parlant.generation import Binding, TurnoutSchematicGenerator
from turnout_parlant.tokenizer import TurnoutTokenizer

pytestmark = pytest.mark.e2e


class Answer(DefaultBaseModel):
    text: str


class FailingHandler(BaseHTTPRequestHandler):
    """Answers every request with an OpenAI-style 500 and counts them."""

    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        body = json.dumps({"error": {"message": "engine died", "type": "internal_error", "code": 500}}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FailingHandler.calls = 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _generator(url: str, model: str = "auto", **settings: int) -> TurnoutSchematicGenerator[Answer]:
    service = TurnoutNLPService(url)
    client = TurnoutClient(url)
    binding = Binding(model, 2048, TurnoutTokenizer(client, None))
    return TurnoutSchematicGenerator[Answer](
        client, binding, GenerationSettings(**settings), service.logger, service.tracer, service.meter,
    )


async def test_unreachable_backend_raises_after_retries(dead_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(TurnoutConnectionError, match=dead_url):
        await _generator(dead_url).generate("hi")
    assert 4 < time.monotonic() - started < 30  # three attempts, 1 s and 4 s apart


async def test_unreachable_backend_fails_initialisation_with_the_url(dead_url: str) -> None:
    with pytest.raises(TurnoutConnectionError, match=dead_url):
        await TurnoutNLPService(dead_url).initialize()


def test_the_loader_fails_parlant_start_at_once(dead_url: str) -> None:
    from lagom import Container
    from parlant.core.loggers import Logger, StdoutLogger
    from parlant.core.meter import LocalMeter, Meter
    from parlant.core.tracer import LocalTracer, Tracer

    container = Container()
    container[Tracer] = LocalTracer()
    container[Logger] = StdoutLogger(container[Tracer])
    container[Meter] = LocalMeter(container[Logger])
    with pytest.raises(TurnoutConnectionError, match=dead_url):
        turnout_nlp_service(dead_url)(container)


async def test_client_error_is_raised_without_retry(turnout_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(TurnoutClientError) as caught:
        await _generator(turnout_url, model="local/llama/no-such-model").generate("hi")
    assert caught.value.status == 404 and "no-such-model" in str(caught.value)
    assert time.monotonic() - started < 5


async def test_unknown_pinned_model_is_named(turnout_url: str) -> None:
    with pytest.raises(TurnoutError, match="no-such-model"):
        await TurnoutNLPService(turnout_url, model="local/llama/no-such-model").initialize()


async def test_server_error_is_retried_then_raised(failing_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(TurnoutServerError, match="engine died") as caught:
        await _generator(failing_url).generate("hi")
    assert caught.value.status == 500
    assert FailingHandler.calls == 2  # Parlant's adapters retry a server error once
    assert time.monotonic() - started < 10


async def test_answers_that_never_validate_name_the_schema(turnout_url: str) -> None:
    generator = _generator(turnout_url, model="local/llama/smollm2-135m-instruct", max_output_tokens=3)
    with pytest.raises(TurnoutSchemaError, match="Answer") as caught:
        await generator.generate("Write a long story.")
    assert caught.value.attempts == 3 and caught.value.schema == "Answer"
