"""ASGI guards in front of every route: API keys and the ingress concurrency limit."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from engine.errors import OverloadedError
from service.api.errors import AuthenticationError, error_body

# Probes, and the API's own description: like OpenAI's published spec it holds no data, and
# clients and schema-driven tools read it before they have a key.
OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/docs"})


class Guards:
    """Rejects requests without a valid key (401) and beyond ``max_ongoing`` at once (503).

    The token after ``Bearer `` must equal a key exactly; it is compared with every key in
    constant time, so neither timing nor which key matched tells anything. The paths in
    :data:`OPEN_PATHS` are always open. A streamed response holds its slot until its last byte
    is sent.
    """

    def __init__(self, app: ASGIApp, *, keys: list[str], max_ongoing: int) -> None:
        self.app = app
        self._keys = [k.encode() for k in keys]
        self._max = max_ongoing
        self.ongoing = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self._keys and not self._authorized(scope):
            await _reject(send, AuthenticationError("a valid API key is required (Authorization: Bearer <key>)"), {})
            return
        if self.ongoing >= self._max:
            await _reject(send, OverloadedError("the server is at capacity; retry shortly"), {"retry-after": "1"})
            return
        self.ongoing += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.ongoing -= 1

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        matches = [hmac.compare_digest(token, key) for key in self._keys]  # all, not any()
        return any(matches)


async def _reject(send: Send, error: AuthenticationError | OverloadedError, headers: dict[str, str]) -> None:
    body = json.dumps(error_body(error.message, error.type, error.status_code)).encode()
    raw_headers = [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in headers.items())]
    await send({"type": "http.response.start", "status": error.status_code, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
