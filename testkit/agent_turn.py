"""Customer turns with a real Parlant server on Turnout (``tests/parlant/agent_app.py``)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from testkit.servers import answers, free_port, start, wait_until


@dataclass(frozen=True)
class Turn:
    ready_s: float  # Parlant's start-up: its agent and guideline evaluated through Turnout
    reply_s: float  # from the customer's message to the agent's reply
    reply: str


@dataclass(frozen=True)
class Turns:
    ready_s: float  # Parlant's start-up: every agent and guideline evaluated through Turnout
    replies: list[Turn]  # one per customer, in the order of the questions


def agent_turn(turnout_url: str, work: Path, timeout_s: float) -> Turn:
    """Start Parlant (its home in ``work``), ask "What is the capital of France?", stop it."""
    with _parlant(turnout_url, work, timeout_s, 1) as (base, ids, ready_s):
        reply_s, reply = _customer(base, ids[0], "What is the capital of France?", timeout_s)
    return Turn(ready_s, reply_s, reply)


def agent_turns(turnout_url: str, work: Path, timeout_s: float, agents: int, questions: list[str]) -> Turns:
    """Start Parlant with ``agents`` agents; one customer per question, all at once, customer
    *i* talking to agent *i* mod ``agents``; each customer's turn timed on its own."""
    with _parlant(turnout_url, work, timeout_s, agents) as (base, ids, ready_s), \
            ThreadPoolExecutor(len(questions)) as pool:
        futures = [pool.submit(_customer, base, ids[i % len(ids)], q, timeout_s) for i, q in enumerate(questions)]
        replies = [Turn(ready_s, *future.result()) for future in futures]
    return Turns(ready_s, replies)


@contextmanager
def _parlant(turnout_url: str, work: Path, timeout_s: float, agents: int) -> Iterator[tuple[str, list[str], float]]:
    """A running Parlant server: (its base URL, its agents' ids, seconds until it was ready)."""
    port, tool_port = free_port(), free_port()
    agent_file = work / "agent_id"
    started = time.monotonic()
    server = start(
        [sys.executable, "-m", "tests.parlant.agent_app", turnout_url, str(port), str(tool_port), str(agent_file),
         str(agents)],
        work / "parlant.log", env={"PARLANT_HOME": str(work / "parlant-home")},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(server, lambda: agent_file.exists() and answers(f"{base}/healthz"), timeout_s)
        yield base, agent_file.read_text().split(), time.monotonic() - started
    finally:
        server.stop(signal.SIGINT, timeout_s=30)


def _customer(base: str, agent_id: str, question: str, timeout_s: float) -> tuple[float, str]:
    """A session with ``agent_id``: (seconds from ``question`` to the agent's reply, the reply)."""
    with httpx.Client(base_url=base, timeout=timeout_s + 30) as http:
        session = http.post("/sessions", json={"agent_id": agent_id}).raise_for_status().json()
        sent = time.monotonic()
        event = http.post(
            f"/sessions/{session['id']}/events",
            json={"kind": "message", "source": "customer", "message": question},
        ).raise_for_status().json()
        reply = _agent_message(http, session["id"], event["offset"] + 1, timeout_s)
    return time.monotonic() - sent, reply


def _agent_message(http: httpx.Client, session_id: str, min_offset: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = http.get(
            f"/sessions/{session_id}/events",
            params={"min_offset": min_offset, "source": "ai_agent", "kinds": "message", "wait_for_data": 60},
        )
        if response.status_code == 504:
            continue
        events = response.raise_for_status().json()
        if events:
            return events[0]["data"]["message"]
    raise TimeoutError(f"no agent reply within {timeout_s}s")
