"""Reference equivalence: the engine as Turnout configures it against transformers in float32.

For every demo model, and for two random DeepSeek checkpoints whose weights are large enough that
attention and MoE routing move the logits (the demo DeepSeek's are not), vLLM's greedy tokens are
checked step by step against the float32 reference (``engine.checks.reference``): they must equal the
reference's up to its first near tie, and never fall clearly below its best choice after it.
Embeddings must point where the reference's do (cosine >= 0.99).

These tests fail on a wrong kernel on any CPU. ``TURNOUT_TEST_CPU_KERNELS=vllm`` runs them on
vLLM's own kernel choice instead of Turnout's default: on a CPU with AMX SmolLM2 then fails, and on
every CPU the DeepSeek checkpoints fail (vLLM-CPU's rotary op, see ``engine.patches.cpu_kernels``). The
last test does that for one checkpoint in every run, so the suite shows it can tell.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from engine.checks.reference import ReferenceEmbedder, ReferenceModel, cosine
from engine.launch.cpu import CpuKernels
from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings
from engine.protocol import ModelRecord, ModelType
from engine.runtime import LocalEngine
from engine.store.manager import LocalModelManager
from engine.store.tiny_deepseek import (
    write_tiny_deepseek_v2_lite,
    write_tiny_deepseek_v3,
)
from tests.integration.conftest import KERNELS

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

N_TOKENS = 32
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "List three prime numbers."}],
]
TEXTS = ["The king rode to the castle.", "A queen", "How do I change a carburetor?", "ok"]
# Weights with this spread make every layer count (transformers' default 0.02 hides attention);
# much larger ones make a random 4-layer network chaotic, where rounding alone changes tokens.
SENSITIVE_INIT = 0.1


async def _check(engine: LocalEngine, reference: ReferenceModel) -> list[str]:
    """Failures, one line per prompt whose greedy tokens part from the reference."""
    failures = []
    for messages in PROMPTS:
        prompt = reference.chat_prompt(messages)
        done = await engine.complete_ids(prompt, max_tokens=N_TOKENS, ignore_eos=True)
        check = reference.check(prompt, list(done.token_ids))
        if not check.ok:
            failures.append(f"{messages[-1]['content']!r}: {check.describe()}; got {done.text!r}")
    return failures


async def _started(record: ModelRecord, kernels: CpuKernels = KERNELS, **settings) -> LocalEngine:
    return await LocalEngine.start(build_engine_args(record, EngineSettings(cpu_kernels=kernels, **settings)))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sensitive_store(tmp_path_factory: pytest.TempPathFactory, smollm2_record: ModelRecord) -> LocalModelManager:
    """A store with the two random DeepSeek checkpoints, written with ``SENSITIVE_INIT``."""
    root = tmp_path_factory.mktemp("reference")
    store = LocalModelManager(root / "store")
    await store.initialize()
    for name, write in (("v3-sensitive", write_tiny_deepseek_v3), ("v2-lite-sensitive", write_tiny_deepseek_v2_lite)):
        write(root / name, tokenizer_dir=smollm2_record.path, seed=0, initializer_range=SENSITIVE_INIT)
        await store.register_model(root / name, ModelType.DEEPSEEK, name=name)
    return store


async def test_smollm2_matches_its_reference(smollm2_engine: LocalEngine, smollm2_record: ModelRecord) -> None:
    assert await _check(smollm2_engine, ReferenceModel(smollm2_record.path)) == []


async def test_demo_deepseek_matches_its_reference(deepseek_engine: LocalEngine, deepseek_record: ModelRecord) -> None:
    assert await _check(deepseek_engine, ReferenceModel(deepseek_record.path)) == []


@pytest.mark.parametrize("name", ["v3-sensitive", "v2-lite-sensitive"])
async def test_random_deepseek_matches_its_reference(sensitive_store: LocalModelManager, name: str) -> None:
    record = sensitive_store.get_model(f"local/deepseek/{name}")
    async with await _started(record, max_model_len=2048) as engine:
        assert await _check(engine, ReferenceModel(record.path)) == []


async def test_minilm_embeddings_match_their_reference(minilm_engine: LocalEngine, minilm_record: ModelRecord) -> None:
    vectors = await minilm_engine.embed(TEXTS)
    expected = ReferenceEmbedder(minilm_record.path).embed(TEXTS)
    similarities = [cosine(a, b) for a, b in zip(vectors, expected)]
    assert min(similarities) >= 0.99, similarities


@pytest.mark.skipif(KERNELS is CpuKernels.VLLM, reason="the whole module already runs on vLLM's choice")
async def test_the_check_fails_on_vllms_own_kernels(sensitive_store: LocalModelManager) -> None:
    """vLLM's kernel choice as it is gets DeepSeek wrong on every CPU: the check must say so."""
    record = sensitive_store.get_model("local/deepseek/v3-sensitive")
    async with await _started(record, CpuKernels.VLLM, max_model_len=2048) as engine:
        failures = await _check(engine, ReferenceModel(record.path))
    assert len(failures) == len(PROMPTS), failures
