"""Prefix affinity: prompt keys, the owner table, and the choice with its load guard."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from router.affinity import AffinityTable, Decision, choose, prefix_keys, prompt_text

SYSTEM = "You are a support agent for Acme. " * 40  # ~1,400 characters shared by every request


def chat(suffix: str, system: str = SYSTEM) -> SimpleNamespace:
    return SimpleNamespace(messages=[{"role": "system", "content": system}, {"role": "user", "content": suffix}])


def keys_of(request: object) -> list[bytes]:
    return prefix_keys(prompt_text(request) or "", 256, 64)


def test_prompt_text_of_messages_prompts_and_content_parts() -> None:
    parts = SimpleNamespace(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert prompt_text(parts) == prompt_text(SimpleNamespace(messages=[{"role": "user", "content": "ab"}]))
    assert prompt_text(SimpleNamespace(prompt="once upon")) == "once upon"
    assert prompt_text(SimpleNamespace(prompt=["first", "second"])) == "first"
    assert prompt_text(SimpleNamespace(input="x")) is None
    # the role is part of the text: the same words from another role are another prompt
    assert prompt_text(chat("hi")) != prompt_text(SimpleNamespace(messages=[{"role": "user", "content": SYSTEM + "hi"}]))


def test_keys_are_shared_exactly_as_far_as_whole_blocks_are_equal() -> None:
    a, b = keys_of(chat("question one")), keys_of(chat("question two, longer"))
    shared = len(prompt_text(chat("")).encode()) // 256
    assert a[:shared] == b[:shared]
    assert len(prefix_keys("x" * 255, 256, 64)) == 1 and len(prefix_keys("x" * 512, 256, 64)) == 2
    assert len(prefix_keys("x" * 513, 256, 64)) == 3 and prefix_keys("", 256, 64) == []
    assert len(prefix_keys("x" * 100_000, 256, 64)) == 64
    # equal prompts share every key; a prompt that only starts alike shares the whole blocks
    assert prefix_keys("x" * 300, 256, 64) == prefix_keys("x" * 300, 256, 64)
    assert prefix_keys("x" * 300, 256, 64)[1] != prefix_keys("x" * 301, 256, 64)[1]
    assert prefix_keys("a" * 256 + "b" * 256, 256, 64)[1] != prefix_keys("c" * 256 + "b" * 256, 256, 64)[1]


def test_requests_sharing_a_prefix_go_to_its_owner() -> None:
    table = AffinityTable(1000)
    loads = {"r1": 0.0, "r2": 0.0}
    first = choose(table, keys_of(chat("one")), loads, max_imbalance=4)
    assert first.decision is Decision.NEW
    again = [choose(table, keys_of(chat(f"q{i}")), loads, max_imbalance=4) for i in range(5)]
    assert {c.replica for c in again} == {first.replica}
    assert all(c.decision is Decision.HIT and c.matched_blocks >= 5 for c in again)


def test_a_new_prefix_goes_to_the_least_loaded() -> None:
    table = AffinityTable(1000)
    choose(table, keys_of(chat("x", system="A" * 2000)), {"r1": 0, "r2": 0}, 4)
    other = choose(table, keys_of(chat("x", system="B" * 2000)), {"r1": 3, "r2": 1}, 4)
    assert other.replica == "r2" and other.decision is Decision.NEW


def test_the_load_guard_diverts_a_hot_prefix() -> None:
    table = AffinityTable(1000)
    owner = choose(table, keys_of(chat("a")), {"r1": 0, "r2": 0}, 2).replica
    other = "r2" if owner == "r1" else "r1"
    within = choose(table, keys_of(chat("b")), {owner: 2, other: 0}, 2)
    assert within.replica == owner and within.decision is Decision.HIT
    beyond = choose(table, keys_of(chat("c")), {owner: 3, other: 0}, 2)
    assert beyond.replica == other and beyond.decision is Decision.DIVERTED and beyond.imbalance == 3
    # the owner keeps the prefix: once its load falls, it gets the prefix again
    assert choose(table, keys_of(chat("d")), {owner: 0, other: 1}, 2).replica == owner


def test_among_replicas_holding_a_prefix_the_least_loaded_gets_it() -> None:
    table = AffinityTable(1000)
    owner = choose(table, keys_of(chat("a")), {"r1": 0, "r2": 0}, 1).replica
    other = "r2" if owner == "r1" else "r1"
    assert choose(table, keys_of(chat("b")), {owner: 2, other: 0}, 1).decision is Decision.DIVERTED
    # both hold it now: it goes wherever the load is lower, as without affinity
    assert choose(table, keys_of(chat("c")), {owner: 0, other: 1}, 1).replica == owner
    both = choose(table, keys_of(chat("d")), {owner: 3, other: 2}, 1)
    assert both.replica == other and both.decision is Decision.HIT
    # a third replica that holds nothing gets it only past the guard
    assert choose(table, keys_of(chat("e")), {owner: 3, other: 2, "r3": 1}, 1).replica == other
    assert choose(table, keys_of(chat("f")), {owner: 3, other: 3, "r3": 1}, 1).replica == "r3"


def test_an_owner_that_is_gone_is_replaced() -> None:
    table = AffinityTable(1000)
    owner = choose(table, keys_of(chat("a")), {"r1": 0, "r2": 0}, 4).replica
    table.forget(owner)
    survivor = "r2" if owner == "r1" else "r1"
    assert choose(table, keys_of(chat("b")), {survivor: 0}, 4).replica == survivor
    assert choose(table, keys_of(chat("c")), {survivor: 5, "r3": 0}, 100).replica == survivor


def test_equal_short_prompts_meet_and_other_ones_spread() -> None:
    table = AffinityTable(1000)
    hello = keys_of(chat("hi", system=""))
    first = choose(table, hello, {"r1": 0, "r2": 0}, 4)
    assert choose(table, hello, {"r1": 1, "r2": 1}, 4).replica == first.replica
    other = choose(table, keys_of(chat("bye", system="")), {first.replica: 1, "r3": 0}, 4)
    assert other.replica == "r3" and other.decision is Decision.NEW


def test_without_prompt_text_it_is_load_balanced() -> None:
    table = AffinityTable(1000)
    choice = choose(table, [], {"r1": 2, "r2": 0}, 4)
    assert choice.decision is Decision.SHORT and choice.replica == "r2" and len(table) == 0


def test_the_table_is_bounded() -> None:
    table = AffinityTable(100)
    for i in range(50):
        choose(table, keys_of(chat("q", system=f"{i:04d}" * 500)), {"r1": 0, "r2": 0}, 4)
    assert len(table) == 100


def test_no_candidates_is_an_error() -> None:
    with pytest.raises(ValueError):
        choose(AffinityTable(10), [], {}, 4)
