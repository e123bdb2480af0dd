"""Reference outputs from Hugging Face transformers in float32, to check an engine against.

A serving engine is right for a checkpoint on this machine when its greedy tokens equal the
reference's greedy tokens (``ReferenceModel.greedy``) and its embeddings point the same way
(``ReferenceEmbedder.embed``). The reference runs the checkpoint's own transformers
implementation in float32 on the CPU: slow, but free of the fast kernels it is checking.

bf16 engines round differently from a float32 reference, so greedy tokens may part where the
reference's top two logits nearly tie (measured here: SmolLM2 parted after 12-19 tokens at gaps of
0.14-0.15 logits). :meth:`ReferenceModel.check` therefore scores every engine step on the
engine's own path, so rounding at a near tie passes and a wrong kernel (gaps of 2-14 logits at
most steps) fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

NEAR_TIE_LOGITS = 0.5  # a float32 logit gap that bf16 rounding can plausibly close


OFF_STEPS_ALLOWED = 1 / 16  # share of steps that may fall further below the reference's best


@dataclass(frozen=True)
class ReferenceCheck:
    """An engine's greedy tokens checked step by step against the float32 reference.

    ``gaps[i]`` is how far (in reference logits) the engine's token ``i`` is below the
    reference's best token at that step, given the engine's own previous tokens: 0 where they
    agree. ``agreed`` counts the leading tokens equal to the reference's free-running greedy ids.
    """

    gaps: tuple[float, ...]
    agreed: int

    @property
    def n(self) -> int:
        return len(self.gaps)

    @property
    def worst_gap(self) -> float:
        return max(self.gaps, default=0.0)

    @property
    def steps_off(self) -> int:
        """Steps whose token is clearly worse than the reference's best (beyond rounding)."""
        return sum(gap > NEAR_TIE_LOGITS for gap in self.gaps)

    @property
    def ok(self) -> bool:
        """The engine chose the reference's best token, or one within rounding of it, at every
        step but at most one in sixteen.

        So the ids equal the reference's up to its first near tie. The rare exception is a
        discrete tie the logits do not show: in a random MoE model, bf16 rounding may flip which
        expert a token goes to. A wrong kernel is wrong at most steps (measured: SmolLM2 on the
        AMX attention path, DeepSeek on vLLM's unmended rotary op, gaps of 2-14 logits).
        """
        return self.steps_off <= int(self.n * OFF_STEPS_ALLOWED)

    def describe(self) -> str:
        step = self.gaps.index(self.worst_gap) if self.gaps else 0
        return (
            f"{self.agreed}/{self.n} leading tokens equal to the reference; {self.steps_off} "
            f"step(s) more than {NEAR_TIE_LOGITS} logits below its best (worst: step {step}, "
            f"{self.worst_gap:.3f})"
        )


class ReferenceModel:
    """A causal LM checkpoint loaded by transformers in float32 for greedy reference decoding."""

    def __init__(self, path: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of ``messages`` rendered with the checkpoint's chat template."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def greedy(self, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        """The argmax token at every step, ``max_new_tokens`` of them (EOS does not stop it)."""
        import torch

        ids = torch.tensor([prompt_ids])
        out: list[int] = []
        past = None
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                result = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                past = result.past_key_values
                token = int(result.logits[0, -1].argmax())
                out.append(token)
                ids = torch.tensor([[token]])
        return out

    def gaps_along(self, prompt_ids: list[int], tokens: list[int]) -> list[float]:
        """For each of ``tokens``: the reference's best logit minus that token's, teacher-forced."""
        import torch

        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([prompt_ids + tokens])).logits[0]
        rows = logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(tokens)]
        chosen = rows.gather(-1, torch.tensor(tokens).unsqueeze(-1)).squeeze(-1)
        return (rows.max(-1).values - chosen).tolist()

    def check(self, prompt_ids: list[int], engine_tokens: list[int]) -> ReferenceCheck:
        """Check an engine's greedy continuation of ``prompt_ids`` against this reference."""
        tokens = list(engine_tokens)
        reference = self.greedy(prompt_ids, len(tokens))
        agreed = next((i for i, (r, e) in enumerate(zip(reference, tokens)) if r != e), len(tokens))
        return ReferenceCheck(tuple(self.gaps_along(prompt_ids, tokens)), agreed)


class ReferenceEmbedder:
    """A sentence-transformers checkpoint through transformers in float32: mean pooling over the
    attention mask, then L2 normalisation (all-MiniLM-L6-v2's own pipeline)."""

    def __init__(self, path: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()

    def embed(self, texts: list[str]) -> list[list[float]]:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).tolist()


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors."""
    dot = sum(x * y for x, y in zip(a, b))
    norm = (sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5)
    return dot / norm if norm else 0.0
