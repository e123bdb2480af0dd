"""The benchmark harness's own arithmetic: load statistics, the report's ratios and its output."""

from __future__ import annotations

import json
import math

from benchmarks.load import LoadResult, RequestTiming, completion_body, percentile
from benchmarks.report import load, markdown, plot, targets
from benchmarks.systems import vllm_cli_args


def test_percentile_interpolates_and_handles_empty():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([1, 2], 50) == 1.5
    assert percentile([10], 99) == 10
    assert math.isnan(percentile([], 50))


def test_summary_counts_tokens_ttft_and_errors():
    ok = RequestTiming(started=0.0, events=[0.5, 0.6, 0.8], output_tokens=3)
    failed = RequestTiming(started=0.0, error="503: busy")
    summary = LoadResult(2, [ok, failed], wall_s=2.0, client_cpu_s=0.5).summary()
    assert summary["errors"] == 1 and summary["output_tokens"] == 3
    assert summary["output_tokens_per_s"] == 1.5 and summary["requests_per_s"] == 0.5
    assert summary["ttft_p50_s"] == 0.5
    assert math.isclose(summary["itl_p50_s"], 0.15) and math.isclose(summary["tpot_p50_s"], 0.15)
    assert summary["client_cpu_share"] == 0.25


def test_completion_body_asks_for_exact_length_and_usage():
    body = completion_body("m", "hi", 64)
    assert body["max_tokens"] == body["min_tokens"] == 64 and body["ignore_eos"] is True
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_vllm_cli_args_turn_engine_kwargs_into_flags():
    args = vllm_cli_args({"model": "/m", "enforce_eager": True, "trust_remote_code": False,
                          "kv_cache_memory_bytes": 5, "structured_outputs_config": {"a": 1}})
    assert args == ["--model", "/m", "--enforce-eager", "--kv-cache-memory-bytes", "5",
                    "--structured-outputs-config", '{"a": 1}']


def _serving(system: str, c: int, tput: float, ttft: float, round_: int = 1) -> dict:
    return {"suite": "serving", "system": system, "round": round_, "concurrency": c, "requests": 8,
            "errors": 0, "output_tokens_per_s": tput, "requests_per_s": 1.0, "ttft_p50_s": ttft,
            "ttft_p99_s": ttft, "itl_p50_s": 0.01, "itl_p99_s": 0.02, "tpot_p50_s": 0.01,
            "client_cpu_share": 0.1}


def _capacity(system: str, tput: float, us: float) -> dict:
    return {"suite": "capacity", "system": system, "concurrency": 64, "output_tokens_per_s": tput,
            "requests_per_s": tput / 64, "cpu_us_per_token": us, "serving_cores": 1.5, "client_cpu_share": 0.4}


def _results(tmp_path):
    infos = [
        _serving("vllm", 1, 30, 0.100), _serving("vllm", 32, 400, 0.8),
        _serving("turnout", 1, 28, 0.110), _serving("turnout", 32, 380, 0.9),
        # three rounds: the median (400) counts, not the outlier of round 2
        _serving("rayllm_ht", 32, 400, 1.0, 1), _serving("rayllm_ht", 32, 100, 1.0, 2),
        _serving("rayllm_ht", 32, 420, 1.0, 3),
        _serving("rayllm", 32, 200, 1.0),
        _capacity("turnout", 9000, 80), _capacity("rayllm", 3000, 300), _capacity("rayllm_ht", 8000, 100),
        {"suite": "fallback_http", "system": "turnout", "ttft_direct_p50_s": 0.05, "ttft_closed_p50_s": 0.06,
         "ttft_open_p50_s": 0.052, "extra_closed_s": 0.01, "extra_open_s": 0.002},
        {"suite": "transformers", "requests": 4, "output_tokens_per_s": 20.0, "requests_per_s": 0.3,
         "latency_p50_s": 3.0, "torch_threads": 2},
        {"suite": "router", "models": 50, "request": "auto", "p50_us": 40.0, "p99_us": 120.0},
        {"suite": "embeddings", "system": "vllm", "texts": 10, "texts_per_s": 100.0, "concurrency": 4,
         "texts_per_request": 16},
        {"suite": "embeddings", "system": "turnout", "texts": 10, "texts_per_s": 80.0, "concurrency": 4,
         "texts_per_request": 16},
        {"suite": "cpu_kernels", "path": "portable", "attention_isa": "vec", "cpu_features": "avx512f",
         "output_tokens_per_s": 500.0},
        {"suite": "cpu_kernels", "path": "vllm", "attention_isa": "vec", "cpu_features": "avx512f",
         "output_tokens_per_s": None, "note": "no AMX: same path as portable"},
        {"suite": "quantization", "case": "int8_at_load", "weights_bytes": 160 * 2**20, "weights_ratio": 0.6,
         "rss_bytes": 1600 * 2**20, "tokens_per_s": 180.0, "tokens_per_s_ratio": 0.9, "token_agreement": 0.97,
         "prompt_agreement": 0.75, "mean_logprob": -3.5, "logprob_gap": 0.04, "source_weights_bytes": 260 * 2**20,
         "source_rss_bytes": 1700 * 2**20, "source_tokens_per_s": 200.0, "source_mean_logprob": -3.46},
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [{"name": f"t{i}", "extra_info": x} for i, x in enumerate(infos)]}))
    return load(path)


def test_targets_are_computed_from_one_run(tmp_path):
    by_name = {t.name: t for t in targets(_results(tmp_path))}
    ceiling = by_name["Turnout / vllm serve, output tokens/s at c=32"]
    assert math.isclose(ceiling.value, 0.95) and not ceiling.met
    assert math.isclose(by_name["Turnout / Ray Serve LLM high-throughput, output tokens/s at c=32"].value, 0.95)
    ttft = by_name["TTFT p50 added by Turnout at c=1"]
    assert math.isclose(ttft.value, 10.0) and ttft.met
    assert math.isclose(by_name["TTFT added by a failed first target, circuit open"].value, 2.0)
    assert by_name["Turnout / Ray Serve LLM, output tokens/s at c=32"].value == 1.9
    assert by_name["Serving-layer capacity / Ray Serve LLM"].value == 3.0
    assert by_name["Serving-layer capacity / Ray Serve LLM high-throughput"].met
    assert by_name["Turnout at c=32 / transformers sequential"].value == 19
    router = by_name["Router decision with 50 models, p99"]
    assert router.value == 120 and router.met is False
    weights = by_name["SmolLM2 int8 at load / bf16, weights"]
    assert weights.value == 0.6 and weights.met is False
    assert by_name["SmolLM2 int8 at load / bf16, output tokens/s at c=32"].met
    agreement = by_name["SmolLM2 int8 at load: prompts whose first 64 greedy tokens match bf16's"]
    assert agreement.value == 0.75 and agreement.met is False


def test_report_lists_every_figure_and_writes_plots(tmp_path):
    figures = _results(tmp_path)
    text = markdown(figures)
    assert "| Router decision with 50 models, p99 | 120 us | <= 100 us | **no** |" in text
    assert "| turnout | 1 | 32 | 8 | 0 | 380.0 |" in text  # every round
    assert "| rayllm_ht | 32 | 3 | 400.0 | 1.00 |" in text  # the median of three, / vllm serve
    assert "| turnout | 64 | 9000 | 140.6 | 80 |" in text  # capacity
    assert "| vllm | vec | n/a | n/a | no AMX: same path as portable |" in text
    assert "Turnout / vllm serve embeddings: 0.80" in text
    assert "| bf16 (source) | 260 | 1.00 | 1700 | 200.0 | 1.00 |" in text
    assert "| int8_at_load | 160 | 0.60 | 1600 | 180.0 | 0.90 | 97.0% | 75% | -3.500 | +0.040 |" in text
    written = plot(figures, tmp_path)
    assert [p.name for p in written] == ["throughput.png", "ttft.png", "capacity.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_missing_figures_are_reported_not_invented(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"benchmarks": []}))
    assert all(t.value is None and t.met is None for t in targets(load(path)))
    assert "| n/a |" in markdown(load(path))


def test_agent_table_reports_hits_and_preemptions_per_system():
    from benchmarks.agent_report import agent_table

    run = {"suite": "agent_trace", "load": "agents", "requests": 300, "errors": 2, "output_tokens_per_s": 32.04,
           "ttft_p50_s": 1.61, "ttft_p99_s": 27.3}
    rows = agent_table([
        {**run, "routing": "kv_aware", "prefix_cache_hit_ratio": 0.89, "preemptions": 12.0},
        {**run, "routing": "rayllm_ht_prefix", "prefix_cache_hit_ratio": None},
    ])
    assert "| kv_aware | agents | 300 | 2 | 32.0 | 1610 | 27300 | 89% | 12 |" in rows
    assert "| rayllm_ht_prefix | agents | 300 | 2 | 32.0 | 1610 | 27300 | n/a | n/a |" in rows


def test_parlant_turns_are_tabled_and_compared():
    from benchmarks.agent_report import agent_table, agent_targets
    from benchmarks.report import Target

    runs = [{"suite": "parlant_agents", "routing": r, "ready_s": 95.2, "turn_p50_s": p50, "turn_p99_s": p99,
             "prefix_cache_hit_ratio": 0.5} for r, p50, p99 in (("default", 40.0, 80.0), ("kv_aware", 20.0, 60.0))]
    assert "| kv_aware | 95 | 20.0 | 60.0 | 50% |" in agent_table(runs)
    found = {t.name: t for t in agent_targets(runs, Target)}
    assert found["KV-aware / default, Parlant turn latency p50 (4 agents, 8 customers)"].value == 0.5
    assert found["KV-aware / default, Parlant turn latency p99 (4 agents, 8 customers)"].met is False
