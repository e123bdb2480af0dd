"""router.kv.cost: the time-to-first-token estimate that picks a replica."""

from __future__ import annotations

import math
import random

import pytest

from router.kv.cost import (
    CostWeights,
    ReplicaLoad,
    cached_tokens,
    choose,
    least_loaded,
    tie_key_of,
)

W = CostWeights(prefill_s_per_token=0.001, decode_s_per_request=0.01)


def _ttft(load: ReplicaLoad, prompt: int, cached: int, w: CostWeights = W) -> float:
    """The README's formula, written out independently of the module."""
    return w.prefill_s_per_token * (prompt - cached + load.queued_prefill_tokens) + (
        w.decode_s_per_request * load.running_requests
    )


@pytest.mark.parametrize(
    ("matched", "prompt", "expected"),
    [(0, 500, 0), (3, 500, 384), (9, 500, 384), (4, 512, 384), (4, 513, 512), (1, 128, 0), (1, 0, 0)],
)
def test_cached_tokens_follow_vllms_hit_rule(matched: int, prompt: int, expected: int) -> None:
    # whole blocks of 128, never the prompt's last token
    assert cached_tokens(matched, 128, prompt) == expected


def test_equal_loads_go_where_the_prefix_is() -> None:
    loads = {"a": ReplicaLoad(2, 0), "b": ReplicaLoad(2, 0)}
    for holder in loads:
        picked = choose(loads, {holder: 4}, prompt_tokens=600, block_size=128, weights=W)
        assert (picked.replica, picked.cached_tokens, picked.best_cached_tokens) == (holder, 512, 512)


def test_a_cache_hit_loses_to_enough_waiting_prefill() -> None:
    prompt, saved = 1000, 7 * 128
    for queued in (saved - 128, saved + 128):
        loads = {"hot": ReplicaLoad(0, queued), "cold": ReplicaLoad(0, 0)}
        picked = choose(loads, {"hot": 7}, prompt_tokens=prompt, block_size=128, weights=W)
        assert picked.replica == ("hot" if queued < saved else "cold")
        assert picked.best_cached_tokens == saved
        assert picked.cached_tokens == (saved if picked.replica == "hot" else 0)


def test_running_requests_weigh_by_their_decode_cost() -> None:
    # 10 running requests cost 0.1 s: more than 64 cached tokens save (0.064 s), less than 128 (0.128 s)
    loads = {"busy": ReplicaLoad(10, 0), "idle": ReplicaLoad(0, 0)}
    assert choose(loads, {"busy": 1}, prompt_tokens=300, block_size=64, weights=W).replica == "idle"
    assert choose(loads, {"busy": 1}, prompt_tokens=300, block_size=128, weights=W).replica == "busy"


@pytest.mark.parametrize("guard", [math.inf, 3])
@pytest.mark.parametrize("seed", range(5))
def test_the_choice_minimises_the_estimate_among_the_guarded(seed: int, guard: float) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        names = [f"r{i}" for i in range(rng.randint(1, 5))]
        loads = {r: ReplicaLoad(rng.randrange(20), rng.randrange(0, 3000, 16)) for r in names}
        matched = {r: rng.randrange(10) for r in names if rng.random() < 0.7}
        prompt = rng.randrange(1, 1500)
        picked = choose(loads, matched, prompt_tokens=prompt, block_size=64, weights=W, max_imbalance=guard)
        least = min(load.running_requests for load in loads.values())
        allowed = [r for r in names if loads[r].running_requests <= least + guard]
        cached = {r: cached_tokens(matched.get(r, 0), 64, prompt) for r in names}
        assert picked.replica in allowed
        best = min(_ttft(loads[r], prompt, cached[r]) for r in allowed)
        assert _ttft(loads[picked.replica], prompt, cached[picked.replica]) == pytest.approx(best)
        assert picked.estimated_ttft_s == pytest.approx(best)
        assert picked.best_cached_tokens == max(cached.values())


@pytest.mark.parametrize("seed", range(5))
def test_with_nothing_cached_it_is_least_loaded(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        loads = {r: ReplicaLoad(rng.randrange(6), rng.randrange(3) * 256) for r in "abcd"}
        key = rng.randbytes(8)
        picked = choose(loads, {}, prompt_tokens=rng.randrange(1, 4000), block_size=128, tie_key=key)
        assert picked.replica == least_loaded(loads, tie_key=key)
        lightest = min(_ttft(load, 0, 0) for load in loads.values())
        assert _ttft(loads[picked.replica], 0, 0) == pytest.approx(lightest)


def test_ties_are_stable_per_prompt_and_spread_across_prompts() -> None:
    loads = {"a": ReplicaLoad(), "b": ReplicaLoad(), "c": ReplicaLoad()}
    picks = [least_loaded(loads, tie_key=tie_key_of([k])) for k in range(300)]
    assert picks == [least_loaded(loads, tie_key=tie_key_of([k])) for k in range(300)]
    assert {picks.count(r) for r in loads} <= set(range(60, 141))  # each near a third


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no candidate"):
        choose({}, {}, prompt_tokens=10, block_size=16)
    with pytest.raises(ValueError, match="prefill_s_per_token"):
        CostWeights(prefill_s_per_token=0)


def test_the_load_guard_keeps_a_holder_from_drawing_all_the_traffic() -> None:
    # the holder saves 1,024 tokens of prefill (1.0 s), far more than its 5 extra requests cost
    # (0.05 s): without the guard it wins; with a guard of 4 requests it is no candidate
    loads = {"holder": ReplicaLoad(5, 0), "other": ReplicaLoad(0, 0)}
    assert choose(loads, {"holder": 8}, prompt_tokens=1500, block_size=128, weights=W).replica == "holder"
    guarded = choose(loads, {"holder": 8}, prompt_tokens=1500, block_size=128, weights=W, max_imbalance=4)
    assert (guarded.replica, guarded.cached_tokens, guarded.best_cached_tokens) == ("other", 0, 1024)
    assert set(guarded.estimates) == {"holder", "other"}
    # at the bound it still wins
    at_bound = {"holder": ReplicaLoad(4, 0), "other": ReplicaLoad(0, 0)}
    assert choose(at_bound, {"holder": 8}, prompt_tokens=1500, block_size=128, weights=W, max_imbalance=4).replica == "holder"
