"""``turnout models quantize`` and ``turnout models compare``: make quantized models, and measure them."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.table import Table

from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings, detect_platform
from engine.protocol import ModelRecord
from engine.quantize.quality import ModelScore, QualitySet, comparison, score_model
from engine.quantize.schemes import LoadScheme
from engine.quantize.tool import SCHEMES, quantize
from engine.runtime import LocalEngine
from engine.store.manager import LocalModelManager
from service.cli.listing import open_store, print_models

JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")
THREADS_OPT = typer.Option(None, "--cpu-threads-bind", help="CPU cores for the engines, e.g. 0-1 (CPU only).")


def quantize_command(
    model: str = typer.Argument(..., help="The model to quantize (local/<family>/<name>)."),
    scheme: str = typer.Option(..., "--scheme", help=f"One of: {', '.join(SCHEMES)}."),
    name: str | None = typer.Option(None, "--name", help="New model's name (default: <name>-<scheme>)."),
    samples: int = typer.Option(64, "--samples", min=1, max=64, help="Calibration texts (shipped, offline)."),
    max_length: int = typer.Option(256, "--max-length", min=16, help="Tokens per calibration text."),
    as_json: bool = JSON_OPT,
) -> None:
    """Write a quantized copy of MODEL into the store with llm-compressor and register it.

    Nothing is registered if quantizing fails or is interrupted.
    """

    manager = open_store()
    record = asyncio.run(quantize(manager, manager.get_model(model), scheme, name=name, samples=samples,
                                  max_length=max_length))
    print_models([record], as_json)


def compare_command(
    source: str = typer.Argument(..., help="The reference model, usually the unquantized one."),
    model: str = typer.Argument(..., help="The model to measure against it (may be SOURCE with --quantization)."),
    quantization: LoadScheme | None = typer.Option(None, "--quantization", help="Quantize MODEL at load."),
    prompts: int | None = typer.Option(None, "--prompts", min=1, help="Only the first N prompts and texts."),
    threads: str | None = THREADS_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Greedy agreement, log-likelihood gap, sizes, memory and tok/s of MODEL against SOURCE,
    over the offline text set in engine/data/quality.json (two engines, one after the other)."""
    from service.cli.doctor import stdout_to_stderr
    from service.cli.generate import quiet_engine_logs

    quiet_engine_logs()
    manager = open_store()
    first, second = manager.get_model(source), manager.get_model(model)
    with stdout_to_stderr():  # the engines' processes print to stdout: keep it for the result
        result = asyncio.run(_compare(manager, QualitySet.load(first.path, limit=prompts), first, second,
                                      EngineSettings(cpu_threads_bind=threads),
                                      EngineSettings(cpu_threads_bind=threads, quantization=quantization)))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_comparison(result)


async def _compare(
    manager: LocalModelManager, qset: QualitySet, first: ModelRecord, second: ModelRecord,
    first_settings: EngineSettings, second_settings: EngineSettings,
) -> dict:
    platform = detect_platform()
    reference = await _score(manager, first, first_settings, platform, qset, None)
    measured = await _score(manager, second, second_settings, platform, qset, reference)
    return comparison(reference, measured)


async def _score(manager, record, settings, platform, qset, reference) -> ModelScore:
    label = record.id + (f" ({settings.quantization} at load)" if settings.quantization else "")
    launch = build_engine_args(record, settings, platform, manager.root)
    async with await LocalEngine.start(launch) as engine:
        return await score_model(engine, qset, model=label, size_bytes=record.size_bytes, reference=reference)


def _print_comparison(result: dict) -> None:
    source, model = result["source"], result["model"]
    table = Table("", source["model"], model["model"], "RATIO")
    mib = lambda b: f"{b / 2**20:,.0f} MiB"
    table.add_row("weights", mib(source["weights_bytes"]), mib(model["weights_bytes"]), f"{result['weights_ratio']:.2f}x")
    table.add_row("engine RSS", mib(source["rss_bytes"]), mib(model["rss_bytes"]), f"{result['rss_ratio']:.2f}x")
    table.add_row("output tok/s", f"{source['tokens_per_s']:.1f}", f"{model['tokens_per_s']:.1f}",
                  f"{result['tokens_per_s_ratio']:.2f}x")
    table.add_row("mean log-prob / token", f"{source['mean_logprob']:.4f}", f"{model['mean_logprob']:.4f}",
                  f"gap {result['logprob_gap']:+.4f}")
    table.add_row("greedy token agreement", "", f"{result['token_agreement']:.1%}", "")
    table.add_row("identical 64-token answers", "", f"{result['prompt_agreement']:.1%}", "")
    Console(width=160).print(table)
