"""Parlant agents on two replicas: a customer turn's latency with KV-aware and default routing.

A real Parlant server (``tests/parlant/agent_app.py``) with 4 agents, each with its own description
and guideline, and 8 customers at once, two per agent, one turn each: every Parlant call of a
turn (guideline matching, message generation, ...) goes to Turnout, which serves SmolLM2 on two
replicas (engine threads unbound) and MiniLM for Parlant's embeddings. The response cache is off,
so that every call reaches an engine and only the replica choice differs. Figures: Parlant's
start-up, the turn latencies (p50, p99, each), vLLM's prefix-cache hits.
"""

from __future__ import annotations

import time

import httpx
import pytest

from benchmarks.figures import metric_total
from benchmarks.load import percentile
from testkit.agent_turn import agent_turns
from testkit.servers import free_port, turnout_beside

AGENTS = 4
QUESTIONS = [
    "What is the capital of France?", "When are you open on Monday?", "Which novel should I read?",
    "My phone has no signal at home.", "What is the capital of Spain?", "Are you open on Friday afternoon?",
    "Can you recommend a book for a train ride?", "The network keeps dropping my calls.",
]
TIMEOUT_S = 1800


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("routing", ["default", "kv_aware"])
def test_parlant_turns(benchmark, routing: str, smollm2_record, minilm_record, demo_store, tmp_path_factory) -> None:
    metrics_port = free_port()
    config = {
        "models": [
            {"id": smollm2_record.id, "replicas": 2, "routing": routing, "engine": {"cpu_threads_bind": "nobind"}},
            {"id": minilm_record.id, "engine": {"cpu_threads_bind": "nobind"}},
        ],
        "server": {"metrics_export_port": metrics_port},
        "response_cache": {"enabled": False},
        "limits": {"first_token_timeout_s": 600},
    }
    work = tmp_path_factory.mktemp(f"parlant-{routing}")
    with turnout_beside(config, work, demo_store.root, timeout_s=900) as (_, base):
        turns = benchmark.pedantic(
            lambda: agent_turns(base, work, TIMEOUT_S, AGENTS, QUESTIONS), rounds=1, iterations=1,
        )
        time.sleep(12)  # Ray exports vLLM's counters every few seconds
        text = httpx.get(f"http://127.0.0.1:{metrics_port}", timeout=10).text
    latencies = sorted(turn.reply_s for turn in turns.replies)
    hits, queries = metric_total(text, "ray_vllm_prefix_cache_hits_total"), metric_total(text, "ray_vllm_prefix_cache_queries_total")
    benchmark.extra_info.update(
        suite="parlant_agents", routing=routing, agents=AGENTS, customers=len(QUESTIONS), ready_s=turns.ready_s,
        turn_p50_s=percentile(latencies, 50), turn_p99_s=percentile(latencies, 99), turns_s=latencies,
        prefix_cache_hit_ratio=hits / queries if queries else None,
    )
    assert all(turn.reply.strip() for turn in turns.replies)
