"""How an engine's greedy tokens are judged against the float32 reference (no model loaded)."""

from __future__ import annotations

from engine.checks.reference import NEAR_TIE_LOGITS, ReferenceCheck, cosine


def test_equal_tokens_pass() -> None:
    check = ReferenceCheck(gaps=(0.0,) * 32, agreed=32)
    assert check.ok and check.steps_off == 0 and check.worst_gap == 0.0


def test_rounding_at_a_near_tie_passes() -> None:
    # measured on SmolLM2: the tokens part after 19 at a 0.15-logit tie, then agree on their path
    check = ReferenceCheck(gaps=(0.0,) * 19 + (0.152,) + (0.0,) * 12, agreed=19)
    assert check.ok and check.steps_off == 0
    assert "19/32 leading tokens" in check.describe()


def test_one_flip_in_sixteen_passes_and_more_fail() -> None:
    one = ReferenceCheck(gaps=(0.0,) * 16 + (1.36,) + (0.0,) * 15, agreed=16)
    assert one.ok and one.steps_off == 1
    three = ReferenceCheck(gaps=(0.0,) * 29 + (1.0, 2.0, 3.0), agreed=29)
    assert not three.ok and "3 step(s)" in three.describe() and "3.000" in three.describe()


def test_a_wrong_kernel_fails() -> None:
    # SmolLM2 with a wrong rotary base: 3 of 32 steps far off; short answers allow none
    wrong = ReferenceCheck(gaps=(0.0, 9.988, 0.0, 4.2, 0.0, 0.7) + (0.0,) * 26, agreed=1)
    assert not wrong.ok
    assert not ReferenceCheck(gaps=(0.0,) * 8 + (NEAR_TIE_LOGITS + 0.01,), agreed=8).ok


def test_cosine() -> None:
    assert cosine([1.0, 0.0], [2.0, 0.0]) == 1.0
    assert abs(cosine([1.0, 0.0], [0.0, 3.0])) < 1e-12
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0
