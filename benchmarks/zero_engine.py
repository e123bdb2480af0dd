"""A zero-cost token source in place of vLLM, to measure the layers in front of an engine.

``ZeroEngine`` implements Ray Serve LLM's engine contract (``LLMServer(engine_cls=...)``, or the
``RAYLLM_VLLM_ENGINE_CLS`` environment variable that ``LLMServer`` reads in every replica). It
streams ``max_tokens`` completion tokens at a steady pace (``ZERO_ENGINE_TOKEN_INTERVAL_MS``, a fast
GPU's per-stream rate by default) without computing anything, so what a system spends per streamed
token is what its serving layers spend: HTTP, validation, routing, hops between processes, SSE.

For Ray Serve LLM's direct streaming the replica serves the engine's own ASGI app (vLLM's, for
the real engine); :meth:`ZeroEngine.build_asgi_app` gives the same contract: OpenAI request bodies
validated into vLLM's request models, and the same token stream as server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray.llm._internal.serve.core.engine.protocol import LLMEngine

TOKEN_INTERVAL_S = float(os.environ.get("ZERO_ENGINE_TOKEN_INTERVAL_MS", "10")) / 1000
WORD = " tok"


class ZeroEngine(LLMEngine):
    """Streams canned tokens at a fixed pace; holds no model and uses no CPU between tokens."""

    def __init__(self, llm_config: Any) -> None:
        self.llm_config = llm_config
        self.model_id = llm_config.model_id

    async def start(self) -> None:
        return None

    def routing_stats(self) -> dict:
        return {}

    async def resolve_lora(self, lora_model: Any) -> None:
        return None

    async def check_health(self) -> None:
        return None

    async def reset_prefix_cache(self) -> None:
        return None

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        async for item in self._answer(request, chat=True):
            yield item

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        async for item in self._answer(request, chat=False):
            yield item

    async def embeddings(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError("the zero-cost engine only generates")
        yield  # pragma: no cover

    async def transcriptions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError("the zero-cost engine only generates")
        yield  # pragma: no cover

    async def _answer(self, request: Any, *, chat: bool) -> AsyncGenerator[Any, None]:
        tokens = request.max_tokens or getattr(request, "max_completion_tokens", None) or 16
        if not request.stream:
            await asyncio.sleep(TOKEN_INTERVAL_S * tokens)
            yield _response(request, tokens, chat=chat)
            return
        async for event in stream_events(request.model or self.model_id, tokens, chat=chat):
            yield event

    async def build_asgi_app(self) -> Any:
        """An OpenAI app over this engine, the shape of vLLM's for direct streaming."""
        from vllm.entrypoints.openai.chat_completion.protocol import (
            ChatCompletionRequest,
        )
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest

        app = FastAPI()

        async def serve(request: Request, model: Any, chat: bool) -> Any:
            parsed = model.model_validate(await request.json())
            if not parsed.stream:
                return JSONResponse(_response(parsed, parsed.max_tokens or 16, chat=chat).model_dump())
            events = stream_events(parsed.model or self.model_id, parsed.max_tokens or 16, chat=chat)
            return StreamingResponse(events, media_type="text/event-stream")

        @app.post("/v1/chat/completions")
        async def chat_route(request: Request) -> Any:
            return await serve(request, ChatCompletionRequest, True)

        @app.post("/v1/completions")
        async def completions_route(request: Request) -> Any:
            return await serve(request, CompletionRequest, False)

        @app.get("/v1/models")
        async def models() -> Any:
            return {"object": "list", "data": [{"id": self.model_id, "object": "model"}]}

        return app

    async def shutdown(self) -> None:
        return None


async def stream_events(model: str, tokens: int, *, chat: bool) -> AsyncGenerator[str, None]:
    """``tokens`` SSE chunks of one token each, one every TOKEN_INTERVAL_S, then usage and DONE."""
    ident, created = f"zero-{uuid.uuid4().hex}", int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"
    for _ in range(tokens):
        await asyncio.sleep(TOKEN_INTERVAL_S)
        choice = {"index": 0, "delta": {"content": WORD}} if chat else {"index": 0, "text": WORD}
        yield _sse({"id": ident, "object": kind, "created": created, "model": model, "choices": [choice | {"finish_reason": None}]})
    usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
    yield _sse({"id": ident, "object": kind, "created": created, "model": model, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _response(request: Any, tokens: int, *, chat: bool) -> Any:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionResponse
    from vllm.entrypoints.openai.completion.protocol import CompletionResponse

    usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
    common = {"id": f"zero-{uuid.uuid4().hex}", "created": int(time.time()), "model": request.model, "usage": usage}
    if chat:
        message = {"role": "assistant", "content": WORD * tokens}
        return ChatCompletionResponse(**common, choices=[{"index": 0, "message": message, "finish_reason": "length"}])
    return CompletionResponse(**common, choices=[{"index": 0, "text": WORD * tokens, "finish_reason": "length"}])
