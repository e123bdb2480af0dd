"""One customer turn with a real Parlant server on Turnout (``tests/parlant/agent_app.py``)."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from testkit.servers import answers, free_port, start, wait_until


@dataclass(frozen=True)
class Turn:
    ready_s: float  # Parlant's start-up: its agent and guideline evaluated through Turnout
    reply_s: float  # from the customer's message to the agent's reply
    reply: str


def agent_turn(turnout_url: str, work: Path, timeout_s: float) -> Turn:
    """Start Parlant (its home in ``work``), ask "What is the capital of France?", stop it."""
    port, tool_port = free_port(), free_port()
    agent_file = work / "agent_id"
    started = time.monotonic()
    server = start(
        [sys.executable, "-m", "tests.parlant.agent_app", turnout_url, str(port), str(tool_port), str(agent_file)],
        work / "parlant.log", env={"PARLANT_HOME": str(work / "parlant-home")},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(server, lambda: agent_file.exists() and answers(f"{base}/healthz"), timeout_s)
        ready_s = time.monotonic() - started
        with httpx.Client(base_url=base, timeout=timeout_s + 30) as http:
            session = http.post("/sessions", json={"agent_id": agent_file.read_text()}).raise_for_status().json()
            sent = time.monotonic()
            event = http.post(
                f"/sessions/{session['id']}/events",
                json={"kind": "message", "source": "customer", "message": "What is the capital of France?"},
            ).raise_for_status().json()
            reply = _agent_message(http, session["id"], event["offset"] + 1, timeout_s)
        return Turn(ready_s, time.monotonic() - sent, reply)
    finally:
        server.stop(signal.SIGINT, timeout_s=30)


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
