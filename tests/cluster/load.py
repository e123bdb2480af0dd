"""Clients that keep a Turnout API busy and tell how every request ended.

Each client sends one request after another (chat, streamed or not, to the models it is given)
until told to stop, and records when it started and ended and how: a complete answer, a stream
that ended with an OpenAI error event, an HTTP error status, a broken connection, or no answer
within the client's timeout (a hang).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

OK, ERROR_EVENT, TRANSPORT, HANG = "ok", "error_event", "transport", "hang"
PROMPT = [{"role": "user", "content": "Name a colour."}]


@dataclass(frozen=True)
class Outcome:
    """One request: what was asked, when, and how it ended."""

    model: str
    stream: bool
    started: float
    ended: float
    result: str  # ok, error_event, transport, hang, or http_<status>
    route: str = ""  # X-Turnout-Route: the targets tried and what happened at each
    detail: str = ""


@dataclass
class Load:
    """``clients`` threads sending to ``base_url`` in turn over ``models`` (streamed every other)."""

    base_url: str
    models: list[str]
    clients: int = 12
    max_tokens: int = 16
    timeout_s: float = 90
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop sending; wait for the requests in flight (each ends within the timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 30)
        assert not any(t.is_alive() for t in self._threads), "a client never returned"
        return list(self.outcomes)

    def _client(self, index: int) -> None:
        turns = itertools.count(index)
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                turn = next(turns)
                model, stream = self.models[turn % len(self.models)], turn % 2 == 0
                outcome = self._one(client, model, stream)
                with self._lock:
                    self.outcomes.append(outcome)

    def _one(self, client: httpx.Client, model: str, stream: bool) -> Outcome:
        body = {"model": model, "messages": PROMPT, "max_tokens": self.max_tokens, "stream": stream}
        started = time.monotonic()
        try:
            if stream:
                result, route, detail = _streamed(client, body)
            else:
                response = client.post("/v1/chat/completions", json=body)
                route = response.headers.get("x-turnout-route", "")
                ok = response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
                result, detail = (OK, "") if ok else (f"http_{response.status_code}", response.text[:300])
        except httpx.TimeoutException as e:
            result, route, detail = HANG, "", repr(e)
        except httpx.HTTPError as e:
            result, route, detail = TRANSPORT, "", repr(e)
        return Outcome(model, stream, started, time.monotonic(), result, route, detail)


def _streamed(client: httpx.Client, body: dict) -> tuple[str, str, str]:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        route = response.headers.get("x-turnout-route", "")
        if response.status_code != 200:
            return f"http_{response.status_code}", route, response.read().decode(errors="replace")[:300]
        done, error = False, ""
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and '"error"' in line:
                error = json.loads(line[len("data: "):]).get("error", {}).get("message", "error")
        if error:
            return ERROR_EVENT, route, error
        return (OK, route, "") if done else (TRANSPORT, route, "the stream ended without [DONE]")


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """Counts by result, plus how many complete answers fell back to another target."""
    counts = Counter(o.result for o in outcomes)
    counts["fallback"] = sum(1 for o in outcomes if o.result == OK and o.route.count("=") > 1)
    return dict(counts)
