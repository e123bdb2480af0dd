"""The replica's stream batcher: the first output leaves at once, the rest in Ray's batches."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray.serve.llm import LLMServer

from service.serve_overrides.llm_server import FirstOutputBatcher, TurnoutLLMServer


async def _engine(steps: list[list[str]], step_s: float, fail: bool = False):
    """Yields each step's items back to back (as vLLM does within one engine step)."""
    for step in steps:
        await asyncio.sleep(step_s)
        for item in step:
            yield item
    if fail:
        raise RuntimeError("engine died")


async def _timed(stream) -> list[tuple[float, list[str]]]:
    started, out = time.perf_counter(), []
    async for batch in stream:
        out.append((time.perf_counter() - started, list(batch)))
    return out


async def test_first_step_leaves_before_the_interval_and_whole():
    steps = [["role", "tok1"], ["tok2"], ["tok3"], ["tok4"]]
    batches = await _timed(FirstOutputBatcher(_engine(steps, 0.01), interval_ms=500).stream())
    first_at, first = batches[0]
    assert first == ["role", "tok1"]  # the role chunk does not leave without the first token
    assert first_at < 0.25  # Ray's batcher would hold it for the full 500 ms
    assert [item for _, batch in batches for item in batch] == ["role", "tok1", "tok2", "tok3", "tok4"]
    assert len(batches) == 2  # the rest still comes batched


async def test_an_empty_stream_ends_without_a_batch():
    assert await _timed(FirstOutputBatcher(_engine([], 0), interval_ms=50).stream()) == []


async def test_an_engine_error_reaches_the_caller():
    with pytest.raises(RuntimeError, match="engine died"):
        await _timed(FirstOutputBatcher(_engine([["a"]], 0, fail=True), interval_ms=20).stream())


async def test_zero_interval_keeps_rays_one_item_batches():
    batches = await _timed(FirstOutputBatcher(_engine([["a", "b"]], 0), interval_ms=0).stream())
    assert [batch for _, batch in batches] == [["a"], ["b"]]


def test_the_server_overrides_rays_batching_hook():
    # A Ray upgrade that renames the hook must fail here, not silently bring the delay back.
    assert any("_batch_output_stream" in vars(cls) for cls in LLMServer.__mro__)
    assert "_batch_output_stream" in vars(TurnoutLLMServer)


def test_hub_tokens_are_not_copied_into_engine_runtime_envs(monkeypatch):
    from ray.llm._internal.serve.engines.vllm import vllm_models

    from service.serve_overrides.llm_server import (
        HUB_TOKENS,
        keep_hub_tokens_out_of_runtime_envs,
    )

    monkeypatch.setattr(vllm_models, "ENV_VARS_TO_PROPAGATE", {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OTHER"})
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    keep_hub_tokens_out_of_runtime_envs()
    assert vllm_models.ENV_VARS_TO_PROPAGATE == {"OTHER"}
    # Ray's own code path (run in the replica) then leaves the token out of the runtime env.
    env = vllm_models.VLLMEngineConfig.get_runtime_env_with_local_env_vars(
        type("Config", (), {"runtime_env": {}, "placement_group_config": None,
                            "_detect_fractional_gpu_from_pg": staticmethod(lambda _: None)})()
    )
    assert "HF_TOKEN" not in env["env_vars"] and not HUB_TOKENS & set(env["env_vars"])
