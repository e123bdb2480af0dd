"""ASGI guards in front of every route: API keys and the ingress concurrency limit."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import AuthenticationError, OverloadedError, error_body

OPEN_PATHS = frozenset({"/health", "/ready"})


class Guards:
    """Rejects requests without a valid key (401) and beyond ``max_ongoing`` at once (503).

    Keys are compared in constant time. ``/health`` and ``/ready`` are always open. A streamed
    response holds its slot until its last byte is sent.
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
        matches = [hmac.compare_digest(token.strip(), key) for key in self._keys]
        return any(matches)


async def _reject(send: Send, error: AuthenticationError | OverloadedError, headers: dict[str, str]) -> None:
    body = json.dumps(error_body(error.message, error.type, error.status_code)).encode()
    raw_headers = [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in headers.items())]
    await send({"type": "http.response.start", "status": error.status_code, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
