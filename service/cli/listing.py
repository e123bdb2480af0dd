"""What ``turnout models`` and its subcommands share: the store they work on, and how models are listed."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.table import Table

from engine.protocol import ModelRecord
from engine.store.manager import LocalModelManager


def open_store() -> LocalModelManager:
    """The store at ``$TURNOUT_HOME``, initialized."""
    manager = LocalModelManager()
    asyncio.run(manager.initialize())
    return manager


def print_models(records: list[ModelRecord], as_json: bool) -> None:
    """``records`` as JSON, or as a table as wide as the terminal (240 columns when piped)."""
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    table = Table("ID", "FAMILY", "ARCH", "CONTEXT", "DTYPE", "QUANT", "SIZE", "SOURCE", "CAPABILITIES")
    for r in records:
        table.add_row(
            r.id, r.family.value, r.architecture, str(r.context_length), r.dtype,
            r.quantization.label if r.quantization else "-",
            f"{r.size_bytes / 2**20:,.0f} MiB", r.source.value,
            ",".join(c.value for c in r.capabilities),
        )
    console = Console()
    if not console.is_terminal:  # piped: do not truncate ids to 80 columns
        console = Console(width=240)
    console.print(table)
