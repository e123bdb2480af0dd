"""Quantized SmolLM2 on the real vLLM engine: int8 at load, a quantize-then-serve round trip with
llm-compressor, and ``turnout models compare`` on real figures. (A GGUF kept quantized is the same
W8A8 layout as int8 at load; tests/unit/test_gguf.py checks the conversion.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings, Platform
from engine.protocol import SourceKind
from engine.quantize.schemes import detect
from engine.quantize.tool import PYTHON_ENV, tool_python
from engine.runtime import LocalEngine
from engine.store.checkpoint import read_config
from engine.store.demo import SMOLLM2_ID
from engine.store.manager import LocalModelManager
from testkit.turnout_cli import turnout

pytestmark = pytest.mark.integration
ASYNC = pytest.mark.asyncio(loop_scope="session")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
W8A8_ID = f"{SMOLLM2_ID}-w8a8"


@pytest.fixture(scope="module")
def quant_store(tmp_path_factory: pytest.TempPathFactory, smollm2_record) -> LocalModelManager:
    """A store of its own with SmolLM2 registered in place."""
    manager = LocalModelManager(tmp_path_factory.mktemp("quant-store"))
    asyncio.run(manager.initialize())
    asyncio.run(manager.register_model(smollm2_record.path, name=smollm2_record.name))
    return manager


async def answer(launch) -> str:
    async with await LocalEngine.start(launch) as engine:
        return (await engine.chat(QUESTION, max_tokens=16)).text


@ASYNC
async def test_int8_at_load_serves_int8_linear_weights_and_answers_paris(quant_store):
    record = quant_store.get_model(SMOLLM2_ID)
    launch = build_engine_args(record, EngineSettings(quantization="int8"), Platform.CPU, quant_store.root)
    served = Path(launch.engine_kwargs["model"])
    assert quant_store.root in served.parents and launch.engine_kwargs["tokenizer"] == str(record.path)
    assert "Paris" in await answer(launch)  # the engine's start wrote the int8 copy it served
    assert detect(read_config(served)).scheme == "w8a8"


@ASYNC
@pytest.mark.timeout(1800)
async def test_quantize_then_serve_round_trip(quant_store, demo_store):
    # GPTQ's result varies between runs (llm-compressor shuffles the calibration texts), and on a
    # 135M model some runs no longer answer "Paris": served is checked here, quality by
    # benchmarks/test_quantization.py and test_compare_reports_agreement_and_sizes
    python = await asyncio.to_thread(tool_python, demo_store.root)  # llm-compressor's, once per machine
    done = await asyncio.to_thread(
        turnout, quant_store.root, "models", "quantize", SMOLLM2_ID, "--scheme", "w8a8", "--samples", "16", "--json", env={PYTHON_ENV: str(python)}, timeout_s=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = LocalModelManager(quant_store.root).get_model(W8A8_ID)
    assert json.loads(done.stdout)[0]["id"] == W8A8_ID
    assert (record.quantization.scheme, record.quantization.method) == ("w8a8", "compressed-tensors")
    assert record.source is SourceKind.GENERATED and record.metadata["quantized_from"] == SMOLLM2_ID
    assert record.size_bytes < 0.7 * quant_store.get_model(SMOLLM2_ID).size_bytes
    assert not list((quant_store.root / "staging").iterdir())
    async with await LocalEngine.start(build_engine_args(record, platform=Platform.CPU)) as engine:
        served = await engine.complete("The capital of France is", max_tokens=8, ignore_eos=True)
    assert served.num_tokens == 8 and served.text.strip()


@pytest.mark.timeout(1200)
def test_an_fp8_model_made_here_is_refused_on_the_cpu_naming_platform_and_scheme(quant_store, demo_store):
    python = tool_python(demo_store.root)
    done = turnout(quant_store.root, "models", "quantize", SMOLLM2_ID, "--scheme", "fp8",
                   env={PYTHON_ENV: str(python)}, timeout_s=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    record = LocalModelManager(quant_store.root).get_model(f"{SMOLLM2_ID}-fp8")
    assert (record.quantization.scheme, record.quantization.weight_type) == ("fp8", "float")
    with pytest.raises(ConfigError) as refused:
        build_engine_args(record, platform=Platform.CPU)
    assert "fp8 (compressed-tensors) cannot run on cpu" in refused.value.message
    assert build_engine_args(record, platform=Platform.CUDA).engine_kwargs["model"] == str(record.path)  # vLLM's to run


def test_quantize_refuses_a_taken_name_and_a_quantized_source(quant_store):
    taken = turnout(quant_store.root, "models", "quantize", SMOLLM2_ID, "--scheme", "w8a8", "--name",
                    "smollm2-135m-instruct")
    assert taken.returncode == 2 and "already registered" in taken.stderr
    unknown = turnout(quant_store.root, "models", "quantize", SMOLLM2_ID, "--scheme", "w3a3")
    assert unknown.returncode == 2 and "w8a8, w4a16, fp8" in unknown.stderr


def test_compare_reports_agreement_and_sizes(quant_store):
    done = turnout(quant_store.root, "models", "compare", SMOLLM2_ID, SMOLLM2_ID, "--quantization", "int8",
                   "--prompts", "8", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["weights_ratio"] < 0.7  # int8 linear weights; embeddings stay bf16
    assert result["token_agreement"] >= 0.8
    assert 0 <= result["prompt_agreement"] <= 1
    assert abs(result["logprob_gap"]) < 0.5
    assert result["source"]["tokens_per_s"] > 0 and result["model"]["rss_bytes"] > 0
