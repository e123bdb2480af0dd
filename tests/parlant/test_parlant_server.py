"""End to end: a real Parlant server on Turnout's models, an agent with a guideline, a customer
message, and the agent's reply. Slow on a CPU (SmolLM2 answers every engine prompt); the times
of each phase are printed."""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx
import pytest

from tests.servers import answers, free_port, start, wait_until

pytestmark = pytest.mark.e2e
REPLY_TIMEOUT_S = int(os.environ.get("TURNOUT_PARLANT_REPLY_TIMEOUT_S", "900"))


def test_agent_replies_through_turnout(turnout_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port, tool_port = free_port(), free_port()
    agent_file = tmp_path / "agent_id"
    started = time.monotonic()
    server = start(
        [sys.executable, "-m", "tests.parlant.agent_app", turnout_url, str(port), str(tool_port), str(agent_file)],
        tmp_path / "parlant.log", env={"PARLANT_HOME": str(tmp_path / "parlant-home")},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(server, lambda: agent_file.exists() and answers(f"{base}/healthz"), REPLY_TIMEOUT_S)
        ready_s = time.monotonic() - started
        with httpx.Client(base_url=base, timeout=REPLY_TIMEOUT_S + 30) as http:
            session = http.post("/sessions", json={"agent_id": agent_file.read_text()}).raise_for_status().json()
            sent = time.monotonic()
            event = http.post(
                f"/sessions/{session['id']}/events",
                json={"kind": "message", "source": "customer", "message": "What is the capital of France?"},
            ).raise_for_status().json()
            reply = _agent_message(http, session["id"], event["offset"] + 1)
        print(f"parlant ready in {ready_s:.0f}s; reply in {time.monotonic() - sent:.0f}s: {reply!r}")
        assert reply.strip()
    finally:
        server.stop(signal.SIGINT, timeout_s=30)


def _agent_message(http: httpx.Client, session_id: str, min_offset: int) -> str:
    deadline = time.monotonic() + REPLY_TIMEOUT_S
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
    raise TimeoutError(f"no agent reply within {REPLY_TIMEOUT_S}s")
