"""``turnout generate``: one chat answer from a registered model, on the in-process vLLM engine."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import typer

from engine.launch.plan import build_engine_args
from engine.runtime import LocalEngine
from engine.store.demo import SMOLLM2_ID
from engine.store.manager import LocalModelManager


def generate(
    prompt: str = typer.Argument(..., help="The user message."),
    model: str = typer.Option(SMOLLM2_ID, "--model", "-m", help="Registered model id."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="Sampling temperature."),
) -> None:
    """Answer PROMPT with a local model on vLLM (CPU or CUDA, detected)."""
    quiet_engine_logs()
    asyncio.run(_generate(prompt, model, max_tokens, temperature))


def quiet_engine_logs() -> None:
    """vLLM logs every start-up step at INFO on stdout; keep the CLI's output to the answer
    unless ``--verbose`` asked for INFO (or VLLM_LOGGING_LEVEL is set)."""
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


async def _generate(prompt: str, model_id: str, max_tokens: int, temperature: float) -> None:
    manager = LocalModelManager()
    await manager.initialize()
    record = manager.get_model(model_id)
    started = time.perf_counter()
    async with await LocalEngine.start(build_engine_args(record)) as engine:
        ready = time.perf_counter()
        result = await engine.chat(
            [{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=temperature
        )
    done = time.perf_counter()
    typer.echo(result.text)
    typer.secho(
        f"[{record.id}: engine ready in {ready - started:.1f}s, {result.num_tokens} tokens "
        f"in {done - ready:.1f}s]",
        err=True, dim=True,
    )
