"""The agent-trace part of the benchmark report (``benchmarks/test_agent_trace.py``): its targets,
its table, and the TTFT CDF plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Figures = list[dict[str, Any]]


def _suite(figures: Figures) -> dict[tuple[str, str], dict[str, Any]]:
    return {(f["routing"], f["load"]): f for f in figures if f.get("suite") == "agent_trace"}


def _parlant(figures: Figures) -> dict[str, dict[str, Any]]:
    return {f["routing"]: f for f in figures if f.get("suite") == "parlant_agents"}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def agent_targets(figures: Figures, target: Any) -> list[Any]:
    """issue targets: KV-aware against the default choice and Ray's router (``target`` builds a row)."""
    runs = _suite(figures)
    parlant = _parlant(figures)

    def ratio(key: str, other: str, load: str = "agents") -> float | None:
        return _ratio(runs.get(("kv_aware", load), {}).get(key), runs.get((other, load), {}).get(key))

    return [
        target("KV-aware / default, TTFT p50 (agent trace)", ratio("ttft_p50_s", "default"), 0.6, False),
        target("KV-aware / Ray Serve LLM HT + PrefixCacheAffinityRouter, TTFT p50 (agent trace)",
               ratio("ttft_p50_s", "rayllm_ht_prefix"), 0.9, False),
        target("KV-aware / default, TTFT p99 (agent trace)", ratio("ttft_p99_s", "default"), 0.7, False),
        target("KV-aware / default, TTFT p99 after the opening wave (agent trace)",
               ratio("ttft_p99_after_opening_s", "default"), 0.7, False),
        target("KV-aware / default, output tokens/s (agent trace)", ratio("output_tokens_per_s", "default"), 1.5, True),
        target("KV-aware / Ray Serve LLM HT + PrefixCacheAffinityRouter, output tokens/s (agent trace)",
               ratio("output_tokens_per_s", "rayllm_ht_prefix"), 1.2, True),
        target("KV-aware / default, output tokens/s, no shared prefixes",
               ratio("output_tokens_per_s", "default", "unshared"), 0.97, True),
        target("KV-aware / default, TTFT p50, no shared prefixes", ratio("ttft_p50_s", "default", "unshared"), 1.03, False),
        target("KV-aware / default, Parlant turn latency p50 (4 agents, 8 customers)",
               _ratio(parlant.get("kv_aware", {}).get("turn_p50_s"), parlant.get("default", {}).get("turn_p50_s")),
               0.7, False),
        target("KV-aware / default, Parlant turn latency p99 (4 agents, 8 customers)",
               _ratio(parlant.get("kv_aware", {}).get("turn_p99_s"), parlant.get("default", {}).get("turn_p99_s")),
               0.7, False),
    ]


def agent_table(figures: Figures) -> list[str]:
    rows = ["", "## Agent trace: 24 agents x ~1,500-token prompts, two SmolLM2 replicas, 16 customers", "",
            ("| routing | load | requests | failed | out tok/s | TTFT p50 ms | TTFT p99 ms | vLLM prefix-cache hits "
             "| vLLM preemptions |"),
            "|---|---|---|---|---|---|---|---|---|"]
    for (routing, load), f in sorted(_suite(figures).items()):
        hits = "n/a" if f.get("prefix_cache_hit_ratio") is None else f"{f['prefix_cache_hit_ratio']:.0%}"
        preempted = "n/a" if f.get("preemptions") is None else f"{f['preemptions']:.0f}"
        rows.append(f"| {routing} | {load} | {f['requests']} | {f.get('errors', 'n/a')} | {f['output_tokens_per_s']:.1f} | "
                    f"{f['ttft_p50_s'] * 1000:.0f} | {f['ttft_p99_s'] * 1000:.0f} | {hits} | {preempted} |")
    parlant = _parlant(figures)
    if parlant:
        rows += ["", "## Parlant: 4 agents, 8 customers at once, one turn each, two SmolLM2 replicas", "",
                 "| routing | start-up s | turn p50 s | turn p99 s | vLLM prefix-cache hits |", "|---|---|---|---|---|"]
        for routing, f in sorted(parlant.items()):
            hits = "n/a" if f.get("prefix_cache_hit_ratio") is None else f"{f['prefix_cache_hit_ratio']:.0%}"
            rows.append(f"| {routing} | {f['ready_s']:.0f} | {f['turn_p50_s']:.1f} | {f['turn_p99_s']:.1f} | {hits} |")
    return rows


def plot_ttft_cdf(plt: Any, figures: Figures, out_dir: Path) -> Path | None:
    """TTFT CDF per system on the agent trace (shared prefixes)."""
    runs = {routing: f for (routing, load), f in _suite(figures).items() if load == "agents" and f.get("ttfts")}
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for routing, f in sorted(runs.items()):
        ttfts = sorted(f["ttfts"])
        ax.plot(ttfts, [(i + 1) / len(ttfts) for i in range(len(ttfts))], label=routing)
    ax.set_xscale("log")
    ax.set_xlabel("TTFT (s)")
    ax.set_ylabel("share of requests")
    ax.legend()
    ax.grid(True, alpha=0.3)
    path = out_dir / "agent_ttft_cdf.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
