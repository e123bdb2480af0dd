"""``turnout models finetune`` and ``turnout models add-adapter``: LoRA adapters in the store."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from engine.lora.adapter import AdapterRecord, AdapterSource
from engine.lora.finetune import FinetuneSettings, read_examples, train_adapter
from service.cli.listing import open_store

JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")
_DEFAULTS = FinetuneSettings()


def print_adapters(records: list[AdapterRecord], as_json: bool) -> None:
    """A table (or JSON) of adapters, each with its base model."""
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    table = Table("ADAPTER", "BASE", "RANK", "MODULES", "SIZE", "SOURCE")
    for r in records:
        table.add_row(r.id, r.base, str(r.rank), ",".join(r.target_modules), f"{r.size_bytes / 2**20:,.1f} MiB", r.source.value)
    console = Console()
    if not console.is_terminal:
        console = Console(width=240)
    console.print(table)


def add_adapter(
    base: str = typer.Argument(..., help="Base model id (local/<family>/<name>)."),
    location: str = typer.Argument(..., help="A PEFT LoRA directory, or a hub repo id with --hub."),
    hub: bool = typer.Option(False, "--hub", help="LOCATION is a Hugging Face hub repo id."),
    revision: str | None = typer.Option(None, "--revision", help="Hub branch, tag or commit."),
    link: bool = typer.Option(False, "--link", help="Register a directory in place instead of copying it."),
    name: str | None = typer.Option(None, "--name", help="Adapter name (after the ':' in its id)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Register a LoRA adapter for BASE, checked against it (modules, shapes, rank)."""
    adapters = open_store().adapters
    if hub:
        record = adapters.pull(base, location, name=name, revision=revision)
    else:
        record = adapters.register(base, Path(location), name=name, copy=not link)
    print_adapters([record], as_json)


def finetune(
    base: str = typer.Argument(..., help="Base model id (local/<family>/<name>)."),
    data: Path = typer.Option(..., "--data", help="Chat examples: JSONL, one {\"messages\": [...]} per line."),
    name: str = typer.Option(..., "--name", help="Adapter name; the adapter's id is BASE:NAME."),
    epochs: int = typer.Option(_DEFAULTS.epochs, "--epochs", help="Passes over the training examples."),
    learning_rate: float = typer.Option(_DEFAULTS.learning_rate, "--learning-rate", help="AdamW learning rate."),
    batch_size: int = typer.Option(_DEFAULTS.batch_size, "--batch-size", help="Examples per step."),
    rank: int = typer.Option(_DEFAULTS.rank, "--rank", help="LoRA rank."),
    alpha: float = typer.Option(_DEFAULTS.alpha, "--alpha", help="LoRA alpha."),
    eval_fraction: float = typer.Option(_DEFAULTS.eval_fraction, "--eval-fraction", help="Share held out for the held-out loss."),
    seed: int = typer.Option(_DEFAULTS.seed, "--seed", help="Shuffling, split and initialisation seed."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (default: torch's)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Train a LoRA adapter for BASE on chat examples and register it as BASE:NAME.

    Nothing is registered if training fails or is interrupted.
    """
    from tqdm import tqdm

    settings = FinetuneSettings(
        epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, rank=rank, alpha=alpha,
        eval_fraction=eval_fraction, seed=seed, threads=threads,
    )
    manager = open_store()
    record = manager.get_model(base)
    read_examples(data)  # bad data fails here, before the base model is loaded
    bar = tqdm(desc=f"fine-tuning {name}", unit="step", leave=True, disable=as_json)

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.update(step - bar.n)

    try:
        adapter = manager.adapters.register_built(
            record.id, name, lambda out: train_adapter(record, data, out, settings, progress),
            AdapterSource.FINETUNED, str(Path(data).resolve()),
        )
    finally:
        bar.close()
    if not as_json:
        meta = adapter.metadata
        typer.echo(
            f"trained {meta.get('training.steps')} steps in {meta.get('training.seconds')} s "
            f"({meta.get('training.seconds_per_step')} s/step); loss {meta.get('training.first_loss')} -> "
            f"{meta.get('training.final_loss')}; held-out loss {meta.get('training.held_out_loss_before')} -> "
            f"{meta.get('training.held_out_loss_after')} ({meta.get('training.held_out_examples')} examples)"
        )
    print_adapters([adapter], as_json)
