"""``turnout models``: list, pull, import, show, rm, demo; finetune and add-adapter for LoRA adapters;
quantize and compare for quantized models."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from engine.lora.adapter import is_adapter_id
from engine.protocol import ModelType, SourceKind
from engine.store.demo import prepare_demo_models
from service.cli.adapters import add_adapter, finetune, print_adapters
from service.cli.listing import open_store, print_models
from service.cli.quantize import compare_command, quantize_command

app = typer.Typer(no_args_is_help=True, help="Manage the local model store ($TURNOUT_HOME).")
app.command("finetune")(finetune)
app.command("add-adapter")(add_adapter)
app.command("quantize")(quantize_command)
app.command("compare")(compare_command)
JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")
FAMILY_OPT = typer.Option(None, "--family", help="Override the detected family.")
NAME_OPT = typer.Option(None, "--name", help="Model name (the last part of the id).")


@app.command("list")
def list_models(
    family: ModelType | None = typer.Option(None, "--family", help="Only this family."),
    as_json: bool = JSON_OPT,
) -> None:
    """List registered models, then their LoRA adapters (each with its base)."""
    manager = open_store()
    models = manager.list_models(family)
    adapters = [a for a in manager.adapters.list() if family is None or a.base in {m.id for m in models}]
    if as_json:
        # one list: the models, then the adapters (an adapter's record names its ``base``)
        typer.echo(json.dumps([r.model_dump(mode="json") for r in [*models, *adapters]], indent=2))
        return
    print_models(models, False)
    if adapters:
        print_adapters(adapters, False)


@app.command()
def show(model_id: str, as_json: bool = JSON_OPT) -> None:
    """Show one model's or adapter's record."""
    manager = open_store()
    record = manager.adapters.get(model_id) if is_adapter_id(model_id) else manager.get_model(model_id)
    if as_json:
        typer.echo(record.model_dump_json(indent=2))
        return
    for key, value in record.model_dump(mode="json", exclude={"metadata"}).items():
        typer.echo(f"{key:15} {value}")
    for key, value in sorted(record.metadata.items()):
        typer.echo(f"  {key:30} {value[:100]}")


@app.command()
def pull(
    reference: str = typer.Argument(..., help="Hub repo id (org/name) or Ollama reference (name:tag)."),
    source: SourceKind = typer.Option(SourceKind.HUGGINGFACE, "--source", help="huggingface or ollama."),
    revision: str | None = typer.Option(None, "--revision", help="Hub branch, tag or commit."),
    registry_url: str | None = typer.Option(None, "--registry-url", help="Ollama registry base URL."),
    name: str | None = NAME_OPT,
    family: ModelType | None = FAMILY_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Download a model from the Hugging Face hub or an Ollama registry."""
    manager = open_store()
    record = asyncio.run(
        manager.download_model(
            reference, family, source, name=name, revision=revision, registry_url=registry_url
        )
    )
    print_models([record], as_json)


@app.command("import")
def import_model(
    location: str = typer.Argument(..., help="A .gguf file, a checkpoint directory, or an Ollama reference."),
    source: SourceKind | None = typer.Option(None, "--source", help="gguf, path or ollama (default: detected)."),
    ollama_home: Path | None = typer.Option(None, "--ollama-dir", help="Ollama store (default $OLLAMA_MODELS or ~/.ollama/models)."),
    copy: bool = typer.Option(False, "--copy", help="Copy a checkpoint directory into the store."),
    keep_quantized: bool = typer.Option(
        False, "--keep-quantized",
        help="GGUF/Ollama: store a quantized GGUF as int8 W8A8 (vLLM has no GGUF loader) instead of bf16.",
    ),
    name: str | None = NAME_OPT,
    family: ModelType | None = FAMILY_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Import a local GGUF file, Ollama model or custom checkpoint directory."""
    manager = open_store()
    kind = source or (SourceKind.GGUF if location.endswith(".gguf") else
                      SourceKind.PATH if Path(location).is_dir() else SourceKind.OLLAMA)
    if kind is SourceKind.PATH:
        coro = manager.register_model(Path(location), family, name=name, copy=copy)
    elif kind is SourceKind.GGUF:
        coro = manager.import_gguf(Path(location), family, name=name, keep_quantized=keep_quantized)
    elif kind is SourceKind.OLLAMA:
        coro = manager.import_ollama(location, family, name=name, ollama_home=ollama_home,
                                     keep_quantized=keep_quantized)
    else:
        coro = manager.download_model(location, family, kind, name=name, ollama_home=ollama_home)
    print_models([asyncio.run(coro)], as_json)


@app.command("rm")
def remove(model_id: str) -> None:
    """Unregister a model or adapter (and delete its files if the store owns them)."""
    manager = open_store()
    if is_adapter_id(model_id):
        typer.echo(f"removed {manager.adapters.remove(model_id).id}")
        return
    record = asyncio.run(manager.remove_model(model_id))
    typer.echo(f"removed {record.id}")


@app.command()
def demo(as_json: bool = JSON_OPT) -> None:
    """Prepare the three offline demo models (no network needed)."""
    manager = open_store()
    print_models(asyncio.run(prepare_demo_models(manager)), as_json)
