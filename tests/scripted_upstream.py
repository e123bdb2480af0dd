"""A scripted OpenAI-compatible upstream on loopback, speaking plain HTTP/1.1 over asyncio.

Each POST gets the next step of the script (the last step repeats): an answer, an error status,
a hang, or a stream that breaks off. ``GET .../models`` always answers 200 (health checks). It is
written on raw sockets so a test controls every byte, including a connection cut mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

CHUNKS = 3


@dataclass(frozen=True)
class Reply:
    """Answer with ``status`` (a chat completion when 200, else an OpenAI error body that, with
    ``echo``, quotes the request's Authorization header back, as careless upstreams do)."""

    status: int = 200
    retry_after: str | None = None
    echo: bool = False


@dataclass(frozen=True)
class Hang:
    """Read the request and send nothing, until the client gives up."""


@dataclass(frozen=True)
class Stream:
    """Stream ``chunks`` chat chunks; then ``[DONE]``, or cut the connection when ``cut``."""

    chunks: int = CHUNKS
    cut: bool = False


Step = Reply | Hang | Stream


@dataclass
class Seen:
    """One request the upstream received."""

    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ScriptedUpstream:
    """Start with ``async with ScriptedUpstream([...]) as upstream``; ``upstream.base_url``."""

    script: list[Step]
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _connections: dict[asyncio.Task, asyncio.StreamWriter] = field(default_factory=dict)
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.body is not None and not s.path.endswith("/models")]

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        self._closed.set()
        for writer in self._connections.values():
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections[task] = writer
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away, as clients may
        finally:
            writer.close()
            self._connections.pop(task, None)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        raw = await reader.readexactly(int(headers.get("content-length", 0)))
        body = json.loads(raw) if raw else None
        self.seen.append(Seen(time.monotonic(), path, headers, body))
        if method == "GET":
            return await _send(writer, 200, {"object": "list", "data": []})
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Hang):
            await self._closed.wait()
            return False
        if isinstance(step, Stream):
            return await _stream(writer, step, body.get("model", "m"))
        extra = {"Retry-After": step.retry_after} if step.retry_after is not None else {}
        said = f"scripted {step.status}" + (f" for {headers.get('authorization')}" if step.echo else "")
        payload = _completion(body.get("model", "m")) if step.status == 200 else _error(step.status, said)
        return await _send(writer, step.status, payload, extra)


async def _send(writer: asyncio.StreamWriter, status: int, payload: dict, extra: dict[str, str] | None = None) -> bool:
    data = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(extra or {})}
    writer.write(_head(status, headers) + data)
    await writer.drain()
    return True


async def _stream(writer: asyncio.StreamWriter, step: Stream, model: str) -> bool:
    writer.write(_head(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"}))
    for i in range(step.chunks):
        await _chunk(writer, f"data: {json.dumps(_delta(model, f'w{i} '))}\n\n")
        await asyncio.sleep(0.01)
    if step.cut:
        writer.transport.abort()  # no terminating chunk: the client sees a broken body
        return False
    await _chunk(writer, "data: [DONE]\n\n")
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def _chunk(writer: asyncio.StreamWriter, text: str) -> None:
    data = text.encode()
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def _completion(model: str) -> dict:
    message = {"role": "assistant", "content": "cloud says hi"}
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def _delta(model: str, text: str) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def _error(status: int, message: str) -> dict:
    return {"error": {"message": message, "type": "scripted", "param": None, "code": status}}
