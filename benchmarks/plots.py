"""The benchmark report's plots: throughput, TTFT p50, capacity and the agent trace's TTFT CDF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.agent_report import plot_ttft_cdf
from benchmarks.figures import Figures, suite


def plot(figures: Figures, out_dir: Path) -> list[Path]:
    """Throughput and TTFT p50 against concurrency, one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    serving = suite(figures, "serving")
    systems = sorted({f["system"] for f in serving})
    written = []
    for key, label, name, scale in (
        ("output_tokens_per_s", "output tokens/s", "throughput.png", 1),
        ("ttft_p50_s", "TTFT p50 (ms)", "ttft.png", 1000),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for system in systems:
            points = sorted((f["concurrency"], f[key] * scale) for f in serving if f["system"] == system)
            ax.plot([c for c, _ in points], [v for _, v in points], marker="o", label=system)
        hf = suite(figures, "transformers")
        if key == "output_tokens_per_s" and hf:
            ax.axhline(hf[0][key], linestyle="--", color="grey", label="transformers (sequential)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(True, alpha=0.3)
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    capacity = suite(figures, "capacity")
    if capacity:
        written.append(_plot_capacity(plt, capacity, out_dir / "capacity.png"))
    cdf = plot_ttft_cdf(plt, figures, out_dir)
    return [*written, cdf] if cdf else written


def _plot_capacity(plt: Any, points: Figures, path: Path) -> Path:
    """Streamed tokens/s and serving CPU per token of each system on the zero-cost engine."""
    best: dict[str, dict[str, Any]] = {}
    for f in points:
        if f["output_tokens_per_s"] > best.get(f["system"], {}).get("output_tokens_per_s", -1):
            best[f["system"]] = f
    points = list(best.values())
    names = [f["system"] for f in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.bar(names, [f["output_tokens_per_s"] for f in points], color="tab:blue")
    left.set_ylabel("streamed tokens/s (higher is better)")
    right.bar(names, [f["cpu_us_per_token"] for f in points], color="tab:orange")
    right.set_ylabel("serving CPU us per token (lower is better)")
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Serving-layer capacity, zero-cost engine, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
