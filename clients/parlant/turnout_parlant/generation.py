"""Parlant generators over ``POST /v1/chat/completions``: schematic (JSON schema) and streaming."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from parlant.adapters.nlp.common import record_llm_metrics
from parlant.core.engines.alpha.prompt_builder import PromptBuilder
from parlant.core.loggers import Logger
from parlant.core.meter import Meter
from parlant.core.nlp.generation import (
    BaseSchematicGenerator,
    SchematicGenerationResult,
    StreamingTextGenerationResult,
    StreamingTextGenerator,
    T,
)
from parlant.core.nlp.generation_info import GenerationInfo, UsageInfo
from parlant.core.nlp.policies import Policy, policy, retry
from parlant.core.nlp.tokenization import EstimatingTokenizer
from parlant.core.tracer import Tracer
from pydantic import ValidationError
from typing_extensions import override

from turnout_parlant.client import Json, Reply, StreamState, TurnoutClient
from turnout_parlant.errors import (
    TurnoutConnectionError,
    TurnoutRateLimitError,
    TurnoutSchemaError,
    TurnoutServerError,
)

CHAT_PATH = "/v1/chat/completions"

# The same retries Parlant's OpenAI adapter applies: transport and rate limits three times,
# server errors twice. Client errors (4xx) are never retried.
TRANSIENT_RETRIES: list[Policy] = [
    retry((TurnoutConnectionError, TurnoutRateLimitError)),
    retry(TurnoutServerError, max_exceptions=2, wait_times=(1.0, 5.0)),
]


@dataclass(frozen=True)
class GenerationSettings:
    """Knobs of the generators; the defaults suit small models on a CPU."""

    max_output_tokens: int = 1024
    validation_attempts: int = 3
    default_temperature: float | None = None
    # An invalid answer asked for again at the same low temperature comes back the same (small
    # models under a grammar tend to loop); the later attempts sample at least this warm.
    retry_temperature: float = 0.7
    # Sampling seed of every request (the n-th validation attempt uses seed + n - 1): the same
    # prompt gets the same answer, which also lets Turnout's response cache answer a repeated
    # request. None samples freshly each time (and such requests are never cached).
    seed: int | None = 0


@dataclass(frozen=True)
class Binding:
    """What a generator sends requests to: a model id or ``auto`` alias, its context and tokenizer."""

    model: str
    context_length: int
    tokenizer: EstimatingTokenizer


def prompt_text(prompt: str | PromptBuilder) -> str:
    return prompt.build() if isinstance(prompt, PromptBuilder) else prompt


def chat_request(binding: Binding, settings: GenerationSettings, prompt: str, hints: Mapping[str, Any]) -> Json:
    request: Json = {
        "model": binding.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": hints.get("max_tokens", settings.max_output_tokens),
    }
    temperature = hints.get("temperature", settings.default_temperature)
    if temperature is not None:
        request["temperature"] = temperature
    if settings.seed is not None:
        request["seed"] = settings.seed
    return request


def usage_of(body: Json) -> UsageInfo:
    usage = body.get("usage") or {}
    return UsageInfo(input_tokens=int(usage.get("prompt_tokens") or 0), output_tokens=int(usage.get("completion_tokens") or 0))


class TurnoutSchematicGenerator(BaseSchematicGenerator[T]):
    """Structured generation: the schema goes out as ``response_format`` ``json_schema``, the answer
    is validated into it, and an invalid answer is asked for again before giving up."""

    def __init__(
        self, client: TurnoutClient, binding: Binding, settings: GenerationSettings,
        logger: Logger, tracer: Tracer, meter: Meter,
    ) -> None:
        super().__init__(logger=logger, tracer=tracer, meter=meter, model_name=binding.model)
        self.client = client
        self.binding = binding
        self.settings = settings

    @property
    @override
    def id(self) -> str:
        return f"turnout/{self.binding.model}"

    @property
    @override
    def max_tokens(self) -> int:
        return self.binding.context_length

    @property
    @override
    def tokenizer(self) -> EstimatingTokenizer:
        return self.binding.tokenizer

    @policy(TRANSIENT_RETRIES)
    @override
    async def do_generate(self, prompt: str | PromptBuilder, hints: Mapping[str, Any] = {}) -> SchematicGenerationResult[T]:
        request = self._request(prompt_text(prompt), hints)
        problem = ""
        for attempt in range(1, self.settings.validation_attempts + 1):
            reply = await self.client.post(CHAT_PATH, self._warmer(request, attempt) if attempt > 1 else request)
            content, problem = self._validated(reply.body)
            if content is not None:
                return await self._result(content, reply)
            self.logger.warning(f"{self.schema.__name__} attempt {attempt} from {reply.model}: {problem}")
        raise TurnoutSchemaError(self.schema.__name__, self.binding.model, self.settings.validation_attempts, problem)

    def _request(self, prompt: str, hints: Mapping[str, Any]) -> Json:
        schema = {"name": self.schema.__name__, "schema": self.schema.model_json_schema(), "strict": True}
        return {**chat_request(self.binding, self.settings, prompt, hints),
                "response_format": {"type": "json_schema", "json_schema": schema}}

    def _warmer(self, request: Json, attempt: int) -> Json:
        warmer = {**request, "temperature": max(request.get("temperature") or 0.0, self.settings.retry_temperature)}
        if "seed" in request:
            warmer["seed"] = request["seed"] + attempt - 1  # another draw, not the same answer again
        return warmer

    def _validated(self, body: Json) -> tuple[T | None, str]:
        choice = (body.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content")
        if choice.get("finish_reason") == "length":
            return None, f"the answer was cut at max_tokens={self.settings.max_output_tokens}"
        if not text:
            return None, "the answer was empty"
        try:
            return self.schema.model_validate_json(text), ""
        except ValidationError as e:
            return None, f"{e.error_count()} validation error(s): {e.errors()[0]['msg']} at {e.errors()[0]['loc']}"

    async def _result(self, content: T, reply: Reply) -> SchematicGenerationResult[T]:
        usage = usage_of(reply.body)
        schema_name = self.schema.__name__
        await record_llm_metrics(self.meter, reply.model, schema_name, usage.input_tokens, usage.output_tokens)
        info = GenerationInfo(schema_name=schema_name, model=reply.model, duration=reply.duration_s, usage=usage)
        return SchematicGenerationResult(content=content, info=info)


class TurnoutStreamingTextGenerator(StreamingTextGenerator):
    """Plain text through the streaming chat endpoint; usage comes from the final usage chunk."""

    def __init__(self, client: TurnoutClient, binding: Binding, settings: GenerationSettings) -> None:
        self.client = client
        self.binding = binding
        self.settings = settings

    @property
    @override
    def id(self) -> str:
        return f"turnout/{self.binding.model}"

    @property
    @override
    def tokenizer(self) -> EstimatingTokenizer:
        return self.binding.tokenizer

    @override
    def generate(self, prompt: str | PromptBuilder, hints: Mapping[str, Any] = {}) -> StreamingTextGenerationResult:
        request = {**chat_request(self.binding, self.settings, prompt_text(prompt), hints),
                   "stream": True, "stream_options": {"include_usage": True}}
        state = StreamState()
        started = time.monotonic()
        finished: list[float] = []

        async def chunks() -> AsyncIterator[str | None]:
            async for event in self.client.stream(CHAT_PATH, request, state):
                if event.get("usage"):
                    state.usage = event["usage"]
                for choice in event.get("choices") or ():
                    if text := (choice.get("delta") or {}).get("content"):
                        yield text
            finished.append(time.monotonic() - started)
            yield None

        def info() -> GenerationInfo:
            if not finished:
                raise RuntimeError("Cannot access generation info before stream is fully consumed")
            model = state.model or self.binding.model
            return GenerationInfo(schema_name="streaming", model=model, duration=finished[0], usage=usage_of({"usage": state.usage}))

        return StreamingTextGenerationResult(stream=chunks(), info_getter=info)
