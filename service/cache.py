"""The response cache: answers to deterministic requests, kept in the entry replica's memory.

A chat or text completion at ``temperature`` 0 or with a ``seed``, and any embeddings request,
gets the same answer again from the same model revision, so the entry keeps it. It lives in the
entry replica's process: a hit is answered on the event loop that received it, with no hop (a
shared cache actor would add a round trip to every request, hit or miss, and be one process for
every entry's traffic). Entries are per entry replica; with ``routing: prefix_affinity`` on the
edge model the same request reaches the same replica, where its answer is.

The key is the endpoint, the model that serves (id and revision) and the whole request as sent;
the size of an entry is its JSON or SSE text. ``Cache-Control: no-cache`` skips the lookup,
``no-store`` skips the fill. A hit gets a fresh id, ``usage.prompt_tokens_details.cached_tokens``
equal to the prompt tokens (as OpenAI reports prompt tokens it did not process again), and,
streamed, the same events as the live stream.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from router.protocol import Endpoint

Json = dict[str, Any]
CACHE_HEADER = "X-Turnout-Cache"
CACHEABLE = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS})


@dataclass(frozen=True)
class CachePolicy:
    """What a request allows: reading a cached answer, and storing its own."""

    read: bool = True
    write: bool = True

    @classmethod
    def from_header(cls, cache_control: str | None) -> CachePolicy:
        directives = {d.strip().split("=")[0].lower() for d in (cache_control or "").split(",")}
        return cls(read="no-cache" not in directives, write="no-store" not in directives)


def deterministic(endpoint: Endpoint, body: Json) -> bool:
    """Whether a request's answer is fixed by the request: greedy or seeded, or embeddings."""
    if endpoint not in CACHEABLE:
        return False
    if endpoint is Endpoint.EMBEDDINGS:
        return True
    temperature = body.get("temperature")
    seed = body.get("seed")
    greedy = isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature == 0
    return greedy or (isinstance(seed, int) and not isinstance(seed, bool))


def cache_key(endpoint: Endpoint, target_id: str, revision: str, body: Json) -> str:
    """The key of one request to one model revision (the request's keys in any order)."""
    canonical = json.dumps([endpoint.value, target_id, revision, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Entry:
    """A cached answer: a JSON ``body`` or the SSE ``events`` of a stream that ended well."""

    target_id: str
    body: Json | None = None
    events: list[str] = field(default_factory=list)
    size: int = 0
    expires: float = 0.0


class ResponseCache:
    """Least recently used entries, at most ``max_bytes`` in all, each for ``ttl_s``."""

    def __init__(
        self, max_bytes: int, ttl_s: float, max_entry_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> bool:
        """Store ``entry`` (sized here); False when it is larger than one entry may be."""
        entry.size = len(json.dumps(entry.body)) if entry.body is not None else sum(len(e) for e in entry.events)
        if entry.size > self.max_entry_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        entry.expires = self._clock() + self.ttl_s
        self._entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1
        return True

    def _drop(self, key: str) -> None:
        self.bytes -= self._entries.pop(key).size


def replayed_body(entry: Entry) -> Json:
    """A cached JSON answer with a fresh id and its prompt tokens counted as cached."""
    body = copy.deepcopy(entry.body or {})
    if "id" in body:
        body["id"] = _fresh_id(body["id"])
    if "created" in body:
        body["created"] = int(time.time())
    _count_cached(body.get("usage"))
    return body


async def replayed_events(entry: Entry) -> AsyncIterator[str]:
    """A cached stream's events as a live stream sends them: one chunk id for the whole
    stream (fresh), and the usage event with its prompt tokens counted as cached."""
    old_id = _stream_id(entry.events)
    new_id = _fresh_id(old_id) if old_id else None
    for event in entry.events:
        if old_id and new_id:
            event = event.replace(old_id, new_id)
        if '"usage":{' in event:
            event = _with_cached_usage(event)
        yield event


def _stream_id(events: list[str]) -> str | None:
    for event in events:
        if event.startswith("data: {"):
            try:
                payload = json.loads(event[6:].split("\n\n", 1)[0])
            except ValueError:
                continue
            if isinstance(payload, dict) and isinstance(payload.get("id"), str):
                return payload["id"]
    return None


def _with_cached_usage(event: str) -> str:
    out = []
    for part in event.split("\n\n"):
        if part.startswith("data: {") and '"usage":{' in part:
            payload = json.loads(part[6:])
            _count_cached(payload.get("usage"))
            part = "data: " + json.dumps(payload, separators=(",", ":"))
        out.append(part)
    return "\n\n".join(out)


def _count_cached(usage: Any) -> None:
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        details = usage.get("prompt_tokens_details") or {}
        usage["prompt_tokens_details"] = {**details, "cached_tokens": usage["prompt_tokens"]}


def _fresh_id(old: str) -> str:
    """``chatcmpl-<new uuid>`` for ``chatcmpl-<old uuid>``: the kind prefix kept, the rest new."""
    return f"{old.split('-', 1)[0]}-{uuid.uuid4()}"


class StreamRecorder:
    """Keeps a stream's events as they pass; :meth:`entry` once the stream ended well."""

    def __init__(self, target_id: str, max_bytes: int) -> None:
        self.events: list[str] = []
        self._size = 0
        self._max = max_bytes
        self.target_id = target_id

    def add(self, chunk: str) -> None:
        if self._size <= self._max:
            self.events.append(chunk)
            self._size += len(chunk)

    def entry(self) -> Entry | None:
        text = "".join(self.events)
        if self._size > self._max or not text.rstrip().endswith("data: [DONE]") or '"error":{' in text:
            return None
        return Entry(self.target_id, events=list(self.events))
