"""``turnout doctor``: is the engine right for this machine? Platform, kernels, golden answers.

The checks live in :mod:`engine.checks.doctor`; this module picks the models (the configuration's, or
those named with ``--model``), runs the checks with the engine's output sent to stderr, renders
the report (a table, or ``--json``) and exits 0 when every check passed, 1 when any failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.checks.attention_paths import PathStatus
from engine.checks.doctor import (
    DoctorReport,
    DoctorTarget,
    Environment,
    GiB,
    examine_environment,
    run_doctor,
)
from engine.checks.golden import CheckStatus
from engine.errors import ModelNotFoundError
from engine.launch.cpu import CpuFeatures
from engine.launch.settings import detect_platform
from engine.store.manager import LocalModelManager
from service.cli.serve import CONFIG_OPT
from service.config import TurnoutConfig, load_config

_STATUS_STYLE = {CheckStatus.PASSED: "green", CheckStatus.FAILED: "bold red", CheckStatus.SKIPPED: "yellow"}


def doctor(
    config: Path | None = CONFIG_OPT,
    models: list[str] = typer.Option([], "--model", "-m", help="Only this model id (repeatable)."),
    reference_max_gb: float = typer.Option(
        4.0, "--reference-max-gb", min=0.0,
        help="Skip the float32 reference for checkpoints larger than this (GiB).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check that the engine gives right answers on this machine, for each configured model."""
    cfg = load_config(config)
    targets = select_targets(cfg, models)
    environment = examine_environment(detect_platform())
    with stdout_to_stderr():  # vLLM and its engine processes log to stdout
        report = asyncio.run(run_doctor(
            targets, environment, reference_max_bytes=int(reference_max_gb * GiB),
            on_model=lambda model_id: typer.echo(f"checking {model_id} ...", err=True),
        ))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, _console())
    raise typer.Exit(report.exit_code)


def select_targets(cfg: TurnoutConfig, model_ids: list[str]) -> list[DoctorTarget]:
    """The configured models (only ``model_ids`` when given) with their registered records.

    Raises :class:`ModelNotFoundError` for an id the configuration lacks or the store has not
    registered, before any engine starts.
    """
    configured = {m.id: m for m in cfg.models}
    unknown = [m for m in model_ids if m not in configured]
    if unknown:
        raise ModelNotFoundError(
            f"not in the configuration: {', '.join(unknown)} (configured: "
            f"{', '.join(configured) or 'none'}; pass --config FILE for others)", param="model",
        )
    manager = LocalModelManager(cfg.store_root)
    asyncio.run(manager.initialize())
    chosen = [configured[m] for m in dict.fromkeys(model_ids)] if model_ids else cfg.models
    return [DoctorTarget(manager.get_model(m.id), m.engine) for m in chosen]


def print_report(report: DoctorReport, console: Console) -> None:
    """The report as text: the machine, one row per model, then each model's answer and notes."""
    _print_environment(report.environment, console)
    table = Table("MODEL", "KIND", "CPU KERNELS", "ATTENTION", "CHECK")
    for m in report.models:
        style = _STATUS_STYLE[m.check.status]
        table.add_row(m.model_id, m.kind, m.cpu_kernels or "-",
                      m.attention.describe() if m.attention else "?",
                      f"[{style}]{m.check.status.value}[/]")
    console.print(table)
    for m in report.models:
        console.print(f"[bold]{m.model_id}[/]")
        if m.check.answer is not None:
            console.print(f"  answer: {escape(repr(_shorten(m.check.answer)))}")
        console.print(f"  {escape(m.check.detail)}")
        if m.attention and m.attention.status not in (PathStatus.OK, PathStatus.NOT_PREDICTED):
            console.print(f"  attention {m.attention.status.value}: {escape(m.attention.note)}")
    console.print(_verdict(report))


def _print_environment(env: Environment, console: Console) -> None:
    gpus = f" ({', '.join(env.gpus)})" if env.gpus else ""
    console.print(f"platform: {env.platform.value}{gpus}")
    console.print(f"cpu: {cpu_summary(env.cpu)}")
    versions = ", ".join(f"{name} {version or 'not installed'}" for name, version in env.versions.items())
    console.print(f"versions: {versions}")


def cpu_summary(cpu: CpuFeatures) -> str:
    """``x86_64: AMX no, AVX-512 yes, ...`` for the features that steer vLLM's kernels."""
    flags = {"AMX": cpu.has_amx, "AVX-512": cpu.avx512f, "AVX512-BF16": cpu.avx512_bf16,
             "AVX2": cpu.avx2}
    return f"{cpu.arch}: " + ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in flags.items())


def _shorten(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _verdict(report: DoctorReport) -> str:
    if report.failures:
        return f"[bold red]FAILED[/]: {', '.join(report.failures)}"
    skipped = sum(m.check.status is CheckStatus.SKIPPED for m in report.models)
    passed = len(report.models) - skipped
    return f"[green]OK[/]: {passed} passed" + (f", {skipped} skipped" if skipped else "")


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=240)  # piped: keep ids whole


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr (also in child processes) so stdout holds only the report."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
