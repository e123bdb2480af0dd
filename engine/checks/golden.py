"""Golden checks: does one started engine answer as the float32 reference does?

For a chat model, the engine's greedy answer to :data:`QUESTION` (rendered with the chat template,
:data:`ANSWER_TOKENS` tokens, EOS ignored so every step is scored) is checked step by step with
:meth:`engine.checks.reference.ReferenceModel.check`. For an embedding model, the engine's vectors for
:data:`EMBED_TEXTS` must point the reference's way (cosine >= :data:`MIN_COSINE`).

The engine runs and is shut down before the reference loads, so the two never share the RAM.
Engines and references come from :class:`Probes`, which unit tests replace with fakes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from engine.checks.reference import (
    ReferenceCheck,
    ReferenceEmbedder,
    ReferenceModel,
    cosine,
)
from engine.launch.plan import EngineLaunch
from engine.runtime import Completion, LocalEngine

QUESTION = "What is the capital of France?"
RAW_PROMPT = "The capital of France is"  # for checkpoints without a chat template
ANSWER_TOKENS = 24
EMBED_TEXTS = ("The capital of France is Paris.", "king", "A carburetor mixes air and fuel.")
MIN_COSINE = 0.99


class CheckStatus(str, Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # the engine answered; its answer was not compared with a reference


@dataclass(frozen=True)
class GoldenCheck:
    """The outcome of one model's golden check, with what a user needs to act on it."""

    status: CheckStatus
    detail: str
    answer: str | None = None  # chat models: the engine's answer, up to its first EOS
    worst_gap: float | None = None  # chat models: ReferenceCheck.worst_gap
    cosines: tuple[float, ...] = ()  # embedding models: engine vs reference, per text


class Engine(Protocol):
    """The part of :class:`engine.runtime.LocalEngine` a golden check uses."""

    async def complete_ids(
        self, prompt_ids: list[int], *, max_tokens: int, ignore_eos: bool = False
    ) -> Completion: ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class ChatReference(Protocol):
    def check(self, prompt_ids: list[int], engine_tokens: list[int]) -> ReferenceCheck: ...


class EmbedReference(Protocol):
    def embed(self, texts: list[str]) -> list[list[float]]: ...


class ChatTemplate:
    """A checkpoint's tokenizer: the question as prompt ids, the answer as text up to EOS."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.stop_ids = _stop_ids(path, self.tokenizer.eos_token_id)

    def prompt_ids(self, question: str) -> list[int]:
        """Same rendering as ``ReferenceModel.chat_prompt``; a raw prompt without a template."""
        if not self.tokenizer.chat_template:
            return list(self.tokenizer.encode(RAW_PROMPT))
        messages = [{"role": "user", "content": question}]
        ids: Any = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def answer(self, token_ids: tuple[int, ...]) -> str:
        end = next((i for i, t in enumerate(token_ids) if t in self.stop_ids), len(token_ids))
        return str(self.tokenizer.decode(list(token_ids[:end]), skip_special_tokens=True)).strip()


@dataclass(frozen=True)
class Probes:
    """How the doctor reaches engines, tokenizers and references; tests inject fakes."""

    start_engine: Callable[[EngineLaunch], Awaitable[AbstractAsyncContextManager[Engine]]] = (
        LocalEngine.start
    )
    chat_template: Callable[[Path], ChatTemplate] = ChatTemplate
    chat_reference: Callable[[Path], ChatReference] = ReferenceModel
    embed_reference: Callable[[Path], EmbedReference] = ReferenceEmbedder


async def check_chat(
    path: Path, launch: EngineLaunch, probes: Probes, *, skip_reference: str | None
) -> GoldenCheck:
    """Greedy answer from a fresh engine, checked against the reference unless it is skipped.

    ``skip_reference`` is the reason not to load the reference (None: load it). Engine failures
    propagate; the caller reports them.
    """
    template = probes.chat_template(path)
    prompt = template.prompt_ids(QUESTION)
    async with await probes.start_engine(launch) as engine:
        completion = await engine.complete_ids(prompt, max_tokens=ANSWER_TOKENS, ignore_eos=True)
    answer = template.answer(completion.token_ids)
    if skip_reference:
        return GoldenCheck(CheckStatus.SKIPPED, f"reference skipped: {skip_reference}", answer)
    result = probes.chat_reference(path).check(prompt, list(completion.token_ids))
    verdict = "matches" if result.ok else "differs from"
    status = CheckStatus.PASSED if result.ok else CheckStatus.FAILED
    detail = f"{verdict} the float32 reference: {result.describe()}"
    return GoldenCheck(status, detail, answer, worst_gap=result.worst_gap)


async def check_embeddings(
    path: Path, launch: EngineLaunch, probes: Probes, *, skip_reference: str | None
) -> GoldenCheck:
    """Embeddings of :data:`EMBED_TEXTS` from a fresh engine against the reference's."""
    texts = list(EMBED_TEXTS)
    async with await probes.start_engine(launch) as engine:
        vectors = await engine.embed(texts)
    if skip_reference:
        return GoldenCheck(CheckStatus.SKIPPED, f"reference skipped: {skip_reference}")
    expected = probes.embed_reference(path).embed(texts)
    cosines = tuple(cosine(a, b) for a, b in zip(vectors, expected, strict=True))
    ok = min(cosines) >= MIN_COSINE
    verdict = "match" if ok else "differ from"
    detail = (
        f"embeddings {verdict} the float32 reference: lowest cosine {min(cosines):.4f} "
        f"over {len(cosines)} texts (limit {MIN_COSINE})"
    )
    return GoldenCheck(CheckStatus.PASSED if ok else CheckStatus.FAILED, detail, cosines=cosines)


def _stop_ids(path: Path, eos: int | None) -> set[int]:
    ids = {eos} if eos is not None else set()
    config = path / "generation_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("eos_token_id")
        ids |= set(value) if isinstance(value, list) else {value} if value is not None else set()
    return ids
