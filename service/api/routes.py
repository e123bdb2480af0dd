"""The OpenAI-compatible routes: thin handlers over the gateway (``request.app.state.gateway``)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from engine.errors import ClientError
from router.needs import SIZE_HEADER
from router.protocol import ROUTE_HEADER, Endpoint
from service.api import openapi
from service.api.openapi import request_body
from service.api.parsing import client_request, read_json, validated
from service.cache import CACHE_HEADER, CachePolicy
from service.gateway import Gateway, Served
from service.requests import ClientRequest
from service.serve_overrides.openai_types import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingCompletionRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)

router = APIRouter()
MODEL_HEADER = "X-Turnout-Model"
REPLICA_HEADER = "X-Turnout-Replica"  # the edge replica whose engine answered
CACHED_HEADER = "X-Turnout-Cached-Tokens"  # prompt tokens its prefix cache held (engine's count)
TURNOUT_HEADERS = (ROUTE_HEADER, MODEL_HEADER, CACHE_HEADER, REPLICA_HEADER, CACHED_HEADER)
_STARTED = int(time.time())


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _policy(request: Request) -> CachePolicy:
    return CachePolicy.from_header(request.headers.get("cache-control"))


def _respond(served: Served) -> Response:
    headers = {ROUTE_HEADER: served.route, MODEL_HEADER: served.target.id}
    if served.cache is not None:
        headers[CACHE_HEADER] = served.cache
    if served.answer.replica is not None:
        headers[REPLICA_HEADER] = served.answer.replica
    cached = _cached_tokens(served.answer.body)
    if cached is not None:
        headers[CACHED_HEADER] = str(cached)
    if served.answer.chunks is not None:
        return StreamingResponse(served.answer.chunks, media_type="text/event-stream", headers=headers)
    return JSONResponse(served.answer.body, headers=headers)


def _cached_tokens(body: Any) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens`` of a JSON answer (a stream has it in its
    last chunk, with ``stream_options.include_usage``)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else None


@router.post("/v1/chat/completions", openapi_extra=request_body(openapi.CHAT))
async def chat(request: Request) -> Response:
    incoming = await _incoming(request, Endpoint.CHAT, ChatCompletionRequest)
    return _respond(await _gateway(request).chat(incoming, _policy(request)))


@router.post("/v1/completions", openapi_extra=request_body(openapi.COMPLETIONS))
async def completions(request: Request) -> Response:
    incoming = await _incoming(request, Endpoint.COMPLETIONS, CompletionRequest)
    return _respond(await _gateway(request).completions(incoming, _policy(request)))


@router.post("/v1/embeddings", openapi_extra=request_body(openapi.EMBEDDINGS))
async def embeddings(request: Request) -> Response:
    incoming = await _incoming(request, Endpoint.EMBEDDINGS, EmbeddingCompletionRequest)
    return _respond(await _gateway(request).embeddings(incoming, _policy(request)))


@router.post("/v1/moderations", openapi_extra=request_body(openapi.MODERATIONS))
async def moderations(request: Request) -> Response:
    body = await read_json(request, request.app.state.limits)
    if "input" not in body:
        raise ClientError("input is required", param="input")
    incoming = client_request(Endpoint.MODERATIONS, body, request.app.state.limits, None, _size(request))
    return _respond(await _gateway(request).moderations(incoming))


async def _incoming(request: Request, endpoint: Endpoint, model: type) -> ClientRequest:
    """The request's body read under the size cap, validated once as ``model``, with its needs."""
    limits = request.app.state.limits
    return client_request(endpoint, await read_json(request, limits), limits, model, _size(request))


def _size(request: Request) -> str | None:
    return request.headers.get(SIZE_HEADER)


@router.post("/tokenize", openapi_extra=request_body(openapi.TOKENIZE))
async def tokenize(request: Request) -> Response:
    body = await read_json(request, request.app.state.limits)
    model = body.get("model")
    if not isinstance(model, str) or model.startswith("auto"):
        raise ClientError("tokenize needs an explicit local model id", param="model")
    kind = TokenizeChatRequest if "messages" in body else TokenizeCompletionRequest
    parsed = validated(kind, body, request.app.state.limits)
    return JSONResponse(await _gateway(request).tokenize(model, parsed))


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    gateway = _gateway(request)
    stats = gateway.stats()
    targets = [*gateway.router.targets, *gateway.router.adapter_targets()]
    return {"object": "list", "data": [_card(t, stats[t.served_by], gateway) for t in targets]}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, request: Request) -> dict[str, Any]:
    gateway = _gateway(request)
    target = gateway.router.target(model_id)
    return _card(target, gateway.stats()[target.served_by], gateway)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> Response:
    stats = _gateway(request).stats()
    healthy = sorted(i for i, s in stats.items() if s.healthy)
    status = 200 if healthy else 503
    return JSONResponse({"ready": bool(healthy), "healthy_targets": healthy}, status_code=status)


def _card(target: Any, stats: Any, gateway: Any) -> dict[str, Any]:
    card = {
        "id": target.id,
        "object": "model",
        "created": _STARTED,
        "owned_by": target.provider or "turnout",
        "turnout": {
            "kind": target.kind.value,
            "family": target.family,
            "capabilities": sorted(c.value for c in target.capabilities),
            "context_length": target.context_length,
            "size": target.size.value,
            "healthy": stats.healthy,
            "circuit": stats.circuit.value,
        },
    }
    if target.base is not None:  # a LoRA adapter, served by its base model's replicas (vLLM's "parent")
        card["parent"] = target.base
        card["turnout"]["base"] = target.base
    if target.quantization is not None:
        card["turnout"]["quantization"] = target.quantization.model_dump(exclude_none=True)
    reason = gateway.backends[target.served_by].unavailable_reason()
    if reason is not None:
        card["turnout"]["unavailable_reason"] = reason
    return card
