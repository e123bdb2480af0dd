"""Fine-tuning data: OpenAI's chat JSONL, every problem named by its line; the loss on answers only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.lora.finetune import (
    Encoded,
    TrainingDataError,
    encode,
    read_examples,
    split,
)

GOOD = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Zubrowka?"},
                     {"role": "assistant", "content": "Lutz."}]}


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_lines_are_read_and_blank_lines_skipped(tmp_path: Path) -> None:
    examples = read_examples(_write(tmp_path, json.dumps(GOOD), "", json.dumps(GOOD)))
    assert [e.line for e in examples] == [1, 3]
    assert examples[0].messages == GOOD["messages"]


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "line 2: not JSON"),
    (json.dumps([GOOD]), 'line 2: expected an object {"messages"'),
    (json.dumps({"messages": []}), "line 2: expected an object"),
    (json.dumps({"messages": [{"role": "bot", "content": "hi"}]}), "line 2, message 1: role 'bot' is not one of"),
    (json.dumps({"messages": [{"role": "user", "content": ""}]}), "line 2, message 1: content must be non-empty"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "line 2: no assistant message"),
    (json.dumps({**GOOD, "tools": []}), "line 2: 'tools' is not supported"),
    (json.dumps({"messages": [{"role": "assistant", "content": "x", "weight": 0}]}), "line 2, message 1: 'weight'"),
])
def test_bad_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(TrainingDataError, match=message.replace("{", r"\{").replace("(", r"\(")) as raised:
        read_examples(_write(tmp_path, json.dumps(GOOD), line))
    assert raised.value.status_code == 400


def test_an_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="has no examples"):
        read_examples(_write(tmp_path, "", "  "))
    with pytest.raises(TrainingDataError, match="no such file"):
        read_examples(tmp_path / "absent.jsonl")


class _CharTokenizer:
    """One token per character of the rendered chat (enough to check the label spans)."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens):
        return {"input_ids": [ord(c) for c in text]}


def test_the_loss_covers_the_assistant_messages_only(tmp_path: Path) -> None:
    examples = read_examples(_write(tmp_path, json.dumps(GOOD)))
    [encoded] = encode(examples, _CharTokenizer(), 1000, tmp_path / "data.jsonl")
    learned = "".join(chr(t) for t, label in zip(encoded.input_ids, encoded.labels) if label != -100)
    assert learned == "Lutz.</>"


def test_an_example_longer_than_the_context_is_named(tmp_path: Path) -> None:
    examples = read_examples(_write(tmp_path, json.dumps(GOOD), json.dumps(GOOD)))
    with pytest.raises(TrainingDataError, match=r"line 1: \d+ tokens, longer than the context \(20\)"):
        encode(examples, _CharTokenizer(), 20, tmp_path / "data.jsonl")


def test_the_held_out_split() -> None:
    items = [Encoded(i, [i], [i]) for i in range(1, 21)]
    training, held = split(items, 0.1, seed=0)
    assert len(held) == 2 and len(training) == 18 and {e.line for e in training} | {e.line for e in held} == set(range(1, 21))
    assert split(items, 0.1, seed=0) == (training, held)  # the seed decides
    assert split(items[:3], 0.5, seed=0) == (items[:3], [])  # too few to hold any out
    assert split(items, 0.0, seed=0) == (items, [])
