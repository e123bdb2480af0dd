"""Fine-tuning: a LoRA adapter trained with PEFT on chat examples, for a registered base model.

Data is OpenAI's chat fine-tuning format: one JSON object per line, ``{"messages": [...]}`` with
``system``, ``user`` and ``assistant`` messages. Every problem is reported with its line
(:class:`TrainingDataError`, 400) before any training starts. The loss covers the assistant
messages only; a share of the examples (``eval_fraction``) is held out and its loss is reported
before and after training. The result is a PEFT directory (``adapter_config.json``,
``adapter_model.safetensors``) plus ``training.json`` with the figures.

Runs on the platform at hand: CUDA (bf16) when torch sees a GPU, else the CPU (fp32).
torch, transformers and peft are imported only when training starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ClientError
from engine.protocol import ModelRecord

ROLES = ("system", "user", "assistant")
TRAINING_FILE = "training.json"
Progress = Callable[[int, int, float], None]  # (step, total steps, loss of the step)


class TrainingDataError(ClientError):
    """The training data cannot be used; the message names the file and line."""

    type = "invalid_training_data"
    status_code = 400


class FinetuneSettings(BaseModel):
    """How an adapter is trained; the defaults suit a few hundred short chat examples."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(default=8, ge=1, le=256, description="LoRA rank (r).")
    alpha: float = Field(default=16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default=["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1,
        description="Base modules that get LoRA matrices (attention projections by default).",
    )
    epochs: int = Field(default=3, ge=1, le=1000, description="Passes over the training examples.")
    batch_size: int = Field(default=4, ge=1, le=512, description="Examples per optimiser step.")
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="AdamW learning rate.")
    eval_fraction: float = Field(
        default=0.1, ge=0, lt=1,
        description="Share of examples held out for the held-out loss (at least 1 when there are 4 or more).",
    )
    max_length: int | None = Field(default=None, ge=16, description="Longest example in tokens; default: the base's context.")
    seed: int = Field(default=0, ge=0, description="Shuffling, split and initialisation seed.")
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch; default: torch's.")


@dataclass(frozen=True)
class Example:
    """One line of training data."""

    line: int
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class Encoded:
    """An example as token ids, with labels (-100 where the loss does not count)."""

    line: int
    input_ids: list[int]
    labels: list[int]


def read_examples(path: Path) -> list[Example]:
    """Parse and check a chat JSONL file; raises TrainingDataError naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainingDataError(f"{path}: no such file", param="data") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TrainingDataError(f"{path}: unreadable ({e})", param="data") from e
    examples = [_example(path, number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not examples:
        raise TrainingDataError(f"{path} has no examples: expected one JSON object per line", param="data")
    return examples


def _example(path: Path, number: int, line: str) -> Example:
    where = f"{path}, line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise TrainingDataError(f"{where}: not JSON ({e.msg})", param="data") from None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list) or not data["messages"]:
        raise TrainingDataError(f'{where}: expected an object {{"messages": [...]}} with at least one message', param="data")
    extra = sorted(set(data) - {"messages"})
    if extra:
        raise TrainingDataError(f"{where}: {extra[0]!r} is not supported; each line holds only 'messages'", param="data")
    messages = []
    for index, message in enumerate(data["messages"], 1):
        if not isinstance(message, dict):
            raise TrainingDataError(f"{where}, message {index}: expected an object with role and content", param="data")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise TrainingDataError(f"{where}, message {index}: role {role!r} is not one of {', '.join(ROLES)}", param="data")
        if not isinstance(content, str) or not content.strip():
            raise TrainingDataError(f"{where}, message {index}: content must be non-empty text", param="data")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise TrainingDataError(f"{where}, message {index}: {extra[0]!r} is not supported", param="data")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise TrainingDataError(f"{where}: no assistant message to learn from", param="data")
    return Example(number, messages)


def encode(examples: list[Example], tokenizer: Any, max_length: int, path: Path) -> list[Encoded]:
    """Token ids of each example through the base's chat template; the loss covers the assistant
    messages. Raises TrainingDataError for an example longer than ``max_length`` tokens."""
    encoded = []
    for example in examples:
        ids = _ids(tokenizer, example.messages, generation_prompt=False)
        if len(ids) > max_length:
            raise TrainingDataError(
                f"{path}, line {example.line}: {len(ids)} tokens, longer than the context ({max_length})", param="data",
            )
        labels = [-100] * len(ids)
        for index, message in enumerate(example.messages):
            if message["role"] != "assistant":
                continue
            start = len(_ids(tokenizer, example.messages[:index], generation_prompt=True))
            end = len(_ids(tokenizer, example.messages[: index + 1], generation_prompt=False))
            labels[start:end] = ids[start:end]
        encoded.append(Encoded(example.line, ids, labels))
    return encoded


def _ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def split(encoded: list[Encoded], fraction: float, seed: int) -> tuple[list[Encoded], list[Encoded]]:
    """(training, held out): ``fraction`` of the examples, at least one when there are 4 or more."""
    if fraction <= 0 or len(encoded) < 4:
        return list(encoded), []
    shuffled = list(encoded)
    random.Random(seed).shuffle(shuffled)
    held = max(1, round(len(shuffled) * fraction))
    return shuffled[held:], shuffled[:held]


def train_adapter(
    base: ModelRecord, data: Path, out: Path, settings: FinetuneSettings, progress: Progress | None = None,
) -> dict[str, str]:
    """Train a LoRA for ``base`` on ``data`` and write it to ``out``; returns the figures as metadata.

    Raises TrainingDataError (before loading the model's weights) for unusable data.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    examples = read_examples(data)
    tokenizer = AutoTokenizer.from_pretrained(str(base.path))
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingDataError(f"{base.id} has no chat template to format chat examples with", param="model")
    encoded = encode(examples, tokenizer, settings.max_length or base.context_length, Path(data))
    training, held_out = split(encoded, settings.eval_fraction, settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.bfloat16 if cuda else torch.float32).to(device)
    lora = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules), task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    per_epoch = math.ceil(len(training) / settings.batch_size)
    total = per_epoch * settings.epochs
    eval_before = _mean_loss(model, held_out, pad, device, settings.batch_size)
    started, step, losses = time.perf_counter(), 0, []
    order = random.Random(settings.seed)
    model.train()
    for _ in range(settings.epochs):
        shuffled = list(training)
        order.shuffle(shuffled)
        for first in range(0, len(shuffled), settings.batch_size):
            loss = model(**_batch(shuffled[first : first + settings.batch_size], pad, device)).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            step += 1
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, total, losses[-1])
    seconds = time.perf_counter() - started
    eval_after = _mean_loss(model, held_out, pad, device, settings.batch_size)
    model.save_pretrained(str(out))
    figures = {
        "base": base.id, "data": str(Path(data).resolve()), "data_sha256": _sha256(Path(data)),
        "examples": len(examples), "training_examples": len(training), "held_out_examples": len(held_out),
        "steps": total, "seconds": round(seconds, 2), "seconds_per_step": round(seconds / max(total, 1), 3),
        "first_loss": round(losses[0], 4), "final_loss": round(sum(losses[-per_epoch:]) / min(per_epoch, len(losses)), 4),
        "held_out_loss_before": _rounded(eval_before), "held_out_loss_after": _rounded(eval_after),
        "device": device, "settings": settings.model_dump(),
    }
    (out / TRAINING_FILE).write_text(json.dumps(figures, indent=2))
    return {f"training.{k}": json.dumps(v) if isinstance(v, dict) else str(v) for k, v in figures.items()}


def _batch(items: list[Encoded], pad: int, device: str) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in items)
    ids = [e.input_ids + [pad] * (width - len(e.input_ids)) for e in items]
    labels = [e.labels + [-100] * (width - len(e.labels)) for e in items]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in items]
    return {
        "input_ids": torch.tensor(ids, device=device), "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def _mean_loss(model: Any, items: list[Encoded], pad: int, device: str, batch_size: int) -> float | None:
    if not items:
        return None
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for first in range(0, len(items), batch_size):
            chunk = items[first : first + batch_size]
            total += float(model(**_batch(chunk, pad, device)).loss) * len(chunk)
            count += len(chunk)
    model.train()
    return total / count


def _rounded(value: float | None) -> str | float:
    return "none" if value is None else round(value, 4)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
