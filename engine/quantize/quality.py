"""What quantization costs: a model scored against its source on a fixed, offline text set.

:func:`score_model` runs one model on a started engine over ``engine/data/quality.json``:

- greedy answers: each of the 64 chat prompts answered with :data:`ANSWER_TOKENS` greedy tokens
  (end of sequence ignored, so every answer has them all), :data:`CONCURRENCY` requests at once;
  their output tokens per second is the model's tok/s;
- likelihood: the mean log-probability per token of the 16 plain texts;
- with a ``reference`` (the source model's score): the reference's answer as a user sees it (its
  first 64 tokens, cut after the end-of-sequence token; what follows it is noise a quantized model
  has no reason to repeat) is fed back after each prompt, and the share of its tokens that this
  model would also have picked greedily is its *token agreement*; a prompt *agrees* when this
  model's answer, cut the same way, is identical.

Both models use the same tokenizer (a quantized model keeps its source's), so token ids compare.
Weights are the bytes of the safetensors files the engine loads (for int8 at load, the int8
copy's); RSS is the engine worker's resident memory (:mod:`engine.patches.worker_memory`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.launch.plan import EngineLaunch
from engine.runtime import LocalEngine

DATA = Path(__file__).parents[1] / "data" / "quality.json"
ANSWER_TOKENS = 64
CONCURRENCY = 32


@dataclass(frozen=True)
class QualitySet:
    """Prompts (as chat prompt token ids) and plain texts (token ids) for one tokenizer."""

    prompts: list[list[int]]
    texts: list[list[int]]
    stop_ids: frozenset[int] = frozenset()

    def answer(self, tokens: list[int]) -> list[int]:
        """What a user is shown of greedy ``tokens``: up to and including the first stop token."""
        end = next((i for i, t in enumerate(tokens) if t in self.stop_ids), len(tokens) - 1)
        return tokens[: end + 1]

    @classmethod
    def load(cls, tokenizer_path: Path, data: Path = DATA, limit: int | None = None) -> QualitySet:
        """The set tokenized with the tokenizer at ``tokenizer_path``; ``limit``: the first
        prompts and texts only (a quick look; figures in reports use the whole set)."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
        raw = json.loads(data.read_text())
        prompts = [_chat_ids(tokenizer, p) for p in raw["prompts"][:limit]]
        texts = [tokenizer(t)["input_ids"] for t in raw["texts"][:limit]]
        return cls(prompts=prompts, texts=texts, stop_ids=_stop_ids(tokenizer_path, tokenizer))


@dataclass
class ModelScore:
    """One model's figures on a :class:`QualitySet`."""

    model: str
    size_bytes: int
    weights_bytes: int
    rss_bytes: int
    tokens_per_s: float
    mean_logprob: float
    answers: list[list[int]] = field(repr=False)
    token_agreement: float | None = None
    prompt_agreement: float | None = None

    def summary(self) -> dict[str, Any]:
        """The figures without the answers, for JSON and tables."""
        return {k: v for k, v in self.__dict__.items() if k != "answers"}


async def score_model(
    engine: LocalEngine, qset: QualitySet, *, model: str, size_bytes: int,
    reference: ModelScore | None = None,
) -> ModelScore:
    """Score the model on ``engine`` (see the module docstring); ``size_bytes``: its checkpoint's."""
    memory = await engine.memory()
    answers, tokens_per_s = await _answers(engine, qset.prompts)
    texts = await _gather(engine.score_ids(ids) for ids in qset.texts)
    scored = [lp for text in texts for lp, _ in text]
    score = ModelScore(
        model=model, size_bytes=size_bytes, weights_bytes=weights_bytes(engine.launch),
        rss_bytes=memory["rss_bytes"],
        tokens_per_s=tokens_per_s, mean_logprob=sum(scored) / len(scored), answers=answers,
    )
    if reference is not None:
        await _agreement(engine, qset, reference, score)
    return score


def comparison(source: ModelScore, other: ModelScore) -> dict[str, Any]:
    """``other`` against ``source``: ratios, agreement and the log-likelihood gap (nats/token)."""
    return {
        "source": source.summary(),
        "model": other.summary(),
        "weights_ratio": other.weights_bytes / source.weights_bytes,
        "rss_ratio": other.rss_bytes / source.rss_bytes,
        "size_ratio": other.size_bytes / source.size_bytes,
        "tokens_per_s_ratio": other.tokens_per_s / source.tokens_per_s,
        "token_agreement": other.token_agreement,
        "prompt_agreement": other.prompt_agreement,
        "logprob_gap": source.mean_logprob - other.mean_logprob,
    }


def weights_bytes(launch: EngineLaunch) -> int:
    """Bytes of the weight files of the checkpoint ``launch`` loads."""
    return sum(f.stat().st_size for f in Path(launch.engine_kwargs["model"]).glob("*.safetensors"))


async def _answers(engine: LocalEngine, prompts: list[list[int]]) -> tuple[list[list[int]], float]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def answer(ids: list[int]) -> list[int]:
        async with gate:
            done = await engine.complete_ids(ids, max_tokens=ANSWER_TOKENS, ignore_eos=True)
            return list(done.token_ids)

    started = time.perf_counter()
    answers = await _gather(answer(ids) for ids in prompts)
    elapsed = time.perf_counter() - started
    return answers, sum(map(len, answers)) / elapsed


async def _agreement(
    engine: LocalEngine, qset: QualitySet, reference: ModelScore, score: ModelScore
) -> None:
    shown = [qset.answer(a) for a in reference.answers]
    fed = await _gather(engine.score_ids(p + a) for p, a in zip(qset.prompts, shown))
    picked = [[rank == 1 for _, rank in ranks[len(p) - 1:]] for p, ranks in zip(qset.prompts, fed)]
    flat = list(itertools.chain.from_iterable(picked))
    score.token_agreement = sum(flat) / len(flat)
    same = [qset.answer(mine) == theirs for mine, theirs in zip(score.answers, shown)]
    score.prompt_agreement = sum(same) / len(same)


async def _gather(coroutines: Any) -> list[Any]:
    return list(await asyncio.gather(*coroutines))


def _stop_ids(path: Path, tokenizer: Any) -> frozenset[int]:
    """The end-of-sequence ids: the tokenizer's and generation_config.json's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generation = path / "generation_config.json"
    if generation.is_file():
        eos = json.loads(generation.read_text()).get("eos_token_id")
        ids |= set(eos) if isinstance(eos, list) else {eos} if isinstance(eos, int) else set()
    return frozenset(ids)


def _chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]
