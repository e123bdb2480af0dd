"""The benchmark report: a markdown table of every figure, the target ratios, and PNG plots.

``python -m benchmarks.report RESULTS.json [OUT_DIR]`` reads pytest-benchmark's JSON (the
figures are in each benchmark's ``extra_info``, :mod:`benchmarks.figures`) and writes ``report.md``
and the plots of :mod:`benchmarks.plots` to ``OUT_DIR`` (default: the JSON's folder).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.agent_report import agent_table, agent_targets
from benchmarks.figures import Figures, load, median_of, serving_points, suite
from benchmarks.plots import plot


@dataclass(frozen=True)
class Target:
    """One published target: a measured figure, how it compares, and the bound."""

    name: str
    value: float | None
    bound: float
    at_least: bool
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value >= self.bound if self.at_least else self.value <= self.bound


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(figures: Figures) -> list[Target]:
    """The targets, from one run's figures: medians over rounds (None where a figure is missing)."""

    def tput(system: str, c: int) -> float | None:
        return median_of(serving_points(figures, system, c), "output_tokens_per_s")

    def ttft(system: str, c: int) -> float | None:
        return median_of(serving_points(figures, system, c), "ttft_p50_s")

    hf = suite(figures, "transformers")
    hf_tput = hf[0]["output_tokens_per_s"] if hf else None
    t_ttft, v_ttft = ttft("turnout", 1), ttft("vllm", 1)
    router50 = [f["p99_us"] for f in suite(figures, "router") if f["models"] == 50]
    fallback = suite(figures, "fallback_http")
    affinity = {(f["routing"], f.get("kv", "kv512MiB")): f for f in suite(figures, "affinity")}
    hit = next((f["p50_ms"] for f in suite(figures, "response_cache") if f["path"] == "cache"), None)

    def routed(key: str, kv: str, other: str = "default") -> float | None:
        return _ratio(affinity.get(("prefix_affinity", kv), {}).get(key), affinity.get((other, kv), {}).get(key))

    adapters = {f["case"]: f["output_tokens_per_s"] for f in suite(figures, "adapters_serving")}
    quant = {f["case"]: f for f in suite(figures, "quantization")}
    int8 = quant.get("int8_at_load", {})
    capacity: dict[str, float] = {}  # each system's best point
    for f in suite(figures, "capacity"):
        capacity[f["system"]] = max(capacity.get(f["system"], 0.0), f["output_tokens_per_s"])
    return [
        Target("Turnout / vllm serve, output tokens/s at c=32", _ratio(tput("turnout", 32), tput("vllm", 32)), 1.0, True),
        Target("Turnout / Ray Serve LLM high-throughput, output tokens/s at c=32",
               _ratio(tput("turnout", 32), tput("rayllm_ht", 32)), 1.0, True),
        Target("Turnout / Ray Serve LLM, output tokens/s at c=32", _ratio(tput("turnout", 32), tput("rayllm", 32)), 1.0, True),
        Target("TTFT p50 added by Turnout at c=1", (t_ttft - v_ttft) * 1000 if t_ttft and v_ttft else None, 10, False, "ms"),
        Target("TTFT added by a failed first target, circuit open",
               fallback[0]["extra_open_s"] * 1000 if fallback else None, 5, False, "ms"),
        Target("Serving-layer capacity / Ray Serve LLM", _ratio(capacity.get("turnout"), capacity.get("rayllm")), 1.5, True),
        Target("Serving-layer capacity / Ray Serve LLM high-throughput",
               _ratio(capacity.get("turnout"), capacity.get("rayllm_ht")), 1.0, True),
        Target("Turnout at c=32 / transformers sequential", _ratio(tput("turnout", 32), hf_tput), 8, True),
        Target("Router decision with 50 models, p99", max(router50) if router50 else None, 100, False, "us"),
        Target("Prefix affinity / default replica choice, TTFT p50 (8 shared prefixes)", routed("ttft_p50_s", "kv512MiB"),
               0.5, False),
        Target("Prefix affinity / default replica choice, TTFT p99", routed("ttft_p99_s", "kv512MiB"), 1.0, False),
        Target("Prefix affinity / default replica choice, output tokens/s", routed("output_tokens_per_s", "kv512MiB"),
               1.0, True),
        Target("Prefix affinity / default, TTFT p50, KV cache for ~4 prefixes per replica",
               routed("ttft_p50_s", "kv144MiB"), 0.5, False),
        Target("Prefix affinity / default, output tokens/s, KV cache for ~4 prefixes per replica",
               routed("output_tokens_per_s", "kv144MiB"), 1.0, True),
        Target("Prefix affinity / Ray Serve LLM high-throughput + PrefixCacheAffinityRouter, TTFT p50",
               routed("ttft_p50_s", "kv512MiB", "rayllm_ht_prefix"), 1.0, False),
        Target("Prefix affinity / Ray Serve LLM high-throughput + PrefixCacheAffinityRouter, output tokens/s",
               routed("output_tokens_per_s", "kv512MiB", "rayllm_ht_prefix"), 1.0, True),
        Target("Response cache hit on loopback, p50", hit, 5, False, "ms"),
        Target("Base + two LoRA adapters / base alone (no LoRA), output tokens/s at c=32",
               _ratio(adapters.get("mixed"), adapters.get("base_lora_off")), 0.8, True),
        Target("SmolLM2 int8 at load / bf16, weights", int8.get("weights_ratio"), 0.55, False),
        Target("SmolLM2 int8 at load / bf16, output tokens/s at c=32", int8.get("tokens_per_s_ratio"), 0.9, True),
        Target("SmolLM2 int8 at load: prompts whose first 64 greedy tokens match bf16's",
               int8.get("prompt_agreement"), 0.9, True),
        *agent_targets(figures, Target),
    ]


def markdown(figures: Figures) -> str:
    """The whole report as markdown."""
    out = ["# Benchmark report", "", "## Targets", "", "| target | measured | bound | met |", "|---|---|---|---|"]
    for t in targets(figures):
        value = "n/a" if t.value is None else f"{t.value:.3g}{(' ' + t.unit) if t.unit else ''}"
        bound = f"{'>=' if t.at_least else '<='} {t.bound:g}{(' ' + t.unit) if t.unit else ''}"
        met = {True: "yes", False: "**no**", None: "n/a"}[t.met]
        out.append(f"| {t.name} | {value} | {bound} | {met} |")
    out += _medians(figures)
    out += _table(
        "Serving, every round (streaming completions over HTTP)",
        ["system", "round", "c", "requests", "errors", "out tok/s", "req/s", "TTFT p50 ms", "TTFT p99 ms",
         "ITL p50 ms", "ITL p99 ms", "TPOT p50 ms", "client CPU"],
        [
            [f["system"], f.get("round", 1), f["concurrency"], f["requests"], f["errors"],
             f"{f['output_tokens_per_s']:.1f}", f"{f['requests_per_s']:.2f}", _ms(f["ttft_p50_s"]),
             _ms(f["ttft_p99_s"]), _ms(f["itl_p50_s"]), _ms(f["itl_p99_s"]), _ms(f["tpot_p50_s"]),
             f"{f['client_cpu_share']:.0%}"]
            for f in sorted(suite(figures, "serving"), key=lambda f: (f["system"], f["concurrency"], f.get("round", 1)))
        ],
    )
    out += _capacity(suite(figures, "capacity"))
    out += agent_table(figures)
    out += _table(
        "Transformers generate, one request at a time (in-process)",
        ["requests", "out tok/s", "req/s", "latency p50 s", "torch threads"],
        [[f["requests"], f"{f['output_tokens_per_s']:.1f}", f"{f['requests_per_s']:.3f}",
          f"{f['latency_p50_s']:.2f}", f["torch_threads"]] for f in suite(figures, "transformers")],
    )
    out += _table(
        "Router decision (stats + plan)",
        ["models", "request", "p50 us", "p99 us"],
        [[f["models"], f["request"], f"{f['p50_us']:.1f}", f"{f['p99_us']:.1f}"]
         for f in sorted(suite(figures, "router"), key=lambda f: (f["request"], f["models"]))],
    )
    out += _table(
        "Fallback cost inside the gateway (in-process backends)",
        ["case", "p50 us", "p99 us"],
        [[f["case"], f"{f['p50_us']:.1f}", f"{f['p99_us']:.1f}"] for f in suite(figures, "fallback")],
    )
    out += _table(
        "Fallback cost over HTTP (primary: a cloud provider that is down)",
        ["TTFT direct p50 ms", "circuit closed p50 ms", "circuit open p50 ms", "extra closed ms", "extra open ms"],
        [[_ms(f["ttft_direct_p50_s"]), _ms(f["ttft_closed_p50_s"]), _ms(f["ttft_open_p50_s"]),
          _ms(f["extra_closed_s"]), _ms(f["extra_open_s"])] for f in suite(figures, "fallback_http")],
    )
    out += _caching(figures)
    out += _cpu_kernels(suite(figures, "cpu_kernels"))
    embed = suite(figures, "embeddings")
    out += _table(
        "Embeddings (MiniLM)",
        ["system", "texts", "texts/s", "concurrency", "texts/request"],
        [[f["system"], f["texts"], f"{f['texts_per_s']:.1f}", f["concurrency"], f["texts_per_request"]] for f in embed],
    )
    by_system = {f["system"]: f["texts_per_s"] for f in embed}
    if "turnout" in by_system and "vllm" in by_system:
        out += ["", f"Turnout / vllm serve embeddings: {by_system['turnout'] / by_system['vllm']:.2f}"]
    return "\n".join(out) + "\n"


def _medians(figures: Figures) -> list[str]:
    """Median over rounds of throughput and TTFT per system and load point, and / vllm serve."""
    serving = suite(figures, "serving")
    keys = sorted({(f["system"], f["concurrency"]) for f in serving})
    rows = []
    for system, c in keys:
        points = serving_points(figures, system, c)
        tput = median_of(points, "output_tokens_per_s")
        base = median_of(serving_points(figures, "vllm", c), "output_tokens_per_s")
        ratio = _ratio(tput, base)
        rows.append([system, c, len(points), f"{tput:.1f}", "n/a" if ratio is None else f"{ratio:.2f}",
                     _ms(median_of(points, "ttft_p50_s")), _ms(median_of(points, "tpot_p50_s"))])
    return _table("Serving, median over rounds", ["system", "c", "rounds", "out tok/s", "/ vllm serve",
                                                   "TTFT p50 ms", "TPOT p50 ms"], rows)


def _caching(figures: Figures) -> list[str]:
    """Prefix affinity against the default replica choice, the response cache, a Parlant agent."""
    out = _table(
        "Two replicas, 8 shared prefixes of ~1,000 tokens, 16 clients",
        ["routing", "KV cache", "requests", "out tok/s", "TTFT p50 ms", "TTFT p99 ms", "vLLM prefix-cache hits",
         "decisions"],
        [[f["routing"], f.get("kv", ""), f["requests"], f"{f['output_tokens_per_s']:.1f}", _ms(f["ttft_p50_s"]), _ms(f["ttft_p99_s"]),
          "n/a" if f.get("prefix_cache_hit_ratio") is None else f"{f['prefix_cache_hit_ratio']:.0%}",
          ", ".join(f"{k} {v:.0f}" for k, v in sorted((f.get("affinity_decisions") or {}).items())) or "n/a"]
         for f in suite(figures, "affinity")],
    )
    out += _table(
        "Response cache (a greedy chat request over HTTP)",
        ["answered by", "p50 ms", "p99 ms"],
        [[f["path"], f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}"] for f in suite(figures, "response_cache")],
    )
    out += _table(
        "A Parlant agent through Turnout: start-up and one customer turn",
        ["response cache", "ready s", "reply s", "hits", "misses", "not cacheable", "hit ratio"],
        [[f["cache"], f"{f['ready_s']:.0f}", f"{f['reply_s']:.0f}", f"{f['hits']:.0f}", f"{f['misses']:.0f}",
          f"{f['bypassed']:.0f}", "n/a" if f.get("hit_ratio") is None else f"{f['hit_ratio']:.0%}"]
         for f in suite(figures, "parlant")],
    )
    out += _table(
        "LoRA adapters: one SmolLM2 replica, 32 clients, 32 tokens per request",
        ["case", "requests", "out tok/s", "TTFT p50 ms", "TTFT p99 ms"],
        [[f["case"], f["requests"], f"{f['output_tokens_per_s']:.1f}", _ms(f["ttft_p50_s"]), _ms(f["ttft_p99_s"])]
         for f in suite(figures, "adapters_serving")],
    )
    out += _table(
        "Fine-tuning a LoRA (SmolLM2, 2 CPU threads)",
        ["steps", "s/step", "total s", "final loss"],
        [[f["steps"], f"{f['seconds_per_step']:.2f}", f"{f['seconds']:.0f}", f"{f['final_loss']:.3f}"]
         for f in suite(figures, "adapters_finetune")],
    )
    out += _quantization(suite(figures, "quantization"))
    return out


def _quantization(cases: Figures) -> list[str]:
    """Each quantized SmolLM2 against bf16, measured in the same run."""
    mib = lambda b: f"{b / 2**20:.0f}"
    rows = [["bf16 (source)", mib(cases[0]["source_weights_bytes"]), "1.00", mib(cases[0]["source_rss_bytes"]),
             f"{cases[0]['source_tokens_per_s']:.1f}", "1.00", "", "", f"{cases[0]['source_mean_logprob']:.3f}", ""]] if cases else []
    rows += [[f["case"], mib(f["weights_bytes"]), f"{f['weights_ratio']:.2f}", mib(f["rss_bytes"]),
              f"{f['tokens_per_s']:.1f}", f"{f['tokens_per_s_ratio']:.2f}", f"{f['token_agreement']:.1%}",
              f"{f['prompt_agreement']:.0%}", f"{f['mean_logprob']:.3f}", f"{f['logprob_gap']:+.3f}"] for f in cases]
    return _table(
        "Quantized SmolLM2 against bf16 (64 prompts x 64 greedy tokens at c=32; 16 texts for log-likelihood)",
        ["model", "weights MiB", "/ bf16", "engine RSS MiB", "out tok/s", "/ bf16", "greedy token agreement",
         "identical 64-token answers", "mean log-prob", "gap (nats/token)"], rows,
    )


def _capacity(points: Figures) -> list[str]:
    """The serving layers alone: a zero-cost engine, the most tokens/s and the CPU per token."""
    return _table(
        "Serving-layer capacity (zero-cost engine in place of vLLM)",
        ["system", "c", "streamed tok/s", "req/s", "serving CPU us/token", "serving cores", "client CPU"],
        [[f["system"], f["concurrency"], f"{f['output_tokens_per_s']:.0f}", f"{f['requests_per_s']:.1f}",
          f"{f['cpu_us_per_token']:.0f}", f"{f['serving_cores']:.2f}", f"{f['client_cpu_share']:.0%}"]
         for f in points],
    )


def _cpu_kernels(paths: Figures) -> list[str]:
    """Engine tok/s on each CPU kernel path, as a ratio to the default (n/a where unavailable)."""
    base = next((f["output_tokens_per_s"] for f in paths if f["path"] == "portable"), None)
    rows = []
    for f in paths:
        tput = f.get("output_tokens_per_s")
        ratio = _ratio(tput, base)
        rows.append([
            f["path"], f["attention_isa"], "n/a" if tput is None else f"{tput:.1f}",
            "n/a" if ratio is None else f"{ratio:.2f}", f.get("note", ""), f["cpu_features"],
        ])
    return _table(
        "CPU kernel paths (engine in-process, SmolLM2, 32 sequences at once)",
        ["path", "attention", "out tok/s", "/ portable", "note", "CPU features"], rows,
    )


def _table(title: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _ms(seconds: float) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.1f}"


def main(argv: list[str]) -> None:
    source = Path(argv[0])
    out_dir = Path(argv[1]) if len(argv) > 1 else source.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = load(source)
    (out_dir / "report.md").write_text(markdown(figures))
    for path in [out_dir / "report.md", *plot(figures, out_dir)]:
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
