"""End to end: a real Parlant server on Turnout's models, an agent with a guideline, a customer
message, and the agent's reply. Slow on a CPU (SmolLM2 answers every engine prompt); the times
of each phase are printed."""

from __future__ import annotations

import os

import pytest

from testkit.agent_turn import agent_turn

pytestmark = pytest.mark.e2e
REPLY_TIMEOUT_S = int(os.environ.get("TURNOUT_PARLANT_REPLY_TIMEOUT_S", "900"))


def test_agent_replies_through_turnout(turnout_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    turn = agent_turn(turnout_url, tmp_path, REPLY_TIMEOUT_S)
    print(f"parlant ready in {turn.ready_s:.0f}s; reply in {turn.reply_s:.0f}s: {turn.reply!r}")
    assert turn.reply.strip()
