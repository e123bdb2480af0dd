"""One benchmark run's figures: pytest-benchmark's JSON, each benchmark's ``extra_info``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

Figures = list[dict[str, Any]]


def load(path: Path) -> Figures:
    """Every benchmark's ``extra_info`` (with its test name under ``name``)."""
    data = json.loads(path.read_text())
    return [{"name": b["name"], **b.get("extra_info", {})} for b in data["benchmarks"]]


def suite(figures: Figures, name: str) -> Figures:
    return [f for f in figures if f.get("suite") == name]


def serving_points(figures: Figures, system: str, concurrency: int) -> Figures:
    """Every round's figures of one system at one load point."""
    return [f for f in suite(figures, "serving") if f["system"] == system and f["concurrency"] == concurrency]


def median_of(points: Figures, key: str) -> float | None:
    """The median of ``key`` over rounds (the noise here is 5-15% between runs)."""
    values = [p[key] for p in points if p.get(key) is not None]
    return statistics.median(values) if values else None


def metric_total(text: str, name: str) -> float:
    """The sum of Prometheus metric ``name`` over all its label sets in ``text``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))
