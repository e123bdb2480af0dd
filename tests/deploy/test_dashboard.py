"""The Grafana dashboard: metric-name extraction, the panels the issue lists, and every queried
name being one that Turnout, vLLM or Ray Serve registers (Ray's export names: ``ray_`` prefix,
``_total`` on counters, ``_bucket`` on histograms). tests/e2e/test_dashboard.py checks the same
names against a real scrape."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from service.metrics import Metrics
from tests.dashboard import base_names, dashboard_metrics, promql_metrics, scraped_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (model, route) (rate(ray_turnout_requests_total{model=~"$model"}[$__rate_interval]))',
         {"ray_turnout_requests_total"}),
        ("histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket[5m])))", {"x_seconds_bucket"}),
        ('a_total{s!="by (x) or y{}"} / on (job) group_left(z) b offset 1h > bool 0.5 and c @ 1700000000',
         {"a_total", "b", "c"}),
        ("max without (ReplicaId) (ray_vllm_kv_cache_usage_perc) * 100", {"ray_vllm_kv_cache_usage_perc"}),
        ('{__name__="x"}', set()),
    ],
)
def test_promql_metric_extraction(expr, names):
    assert promql_metrics(expr) == names


def test_scrape_parsing_keeps_suffixes():
    text = "# HELP a_total x\n# TYPE a_total counter\na_total{x=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.1\ng 3\n"
    assert scraped_names(text) == {"a_total", "h_bucket", "h_sum", "g"}
    assert base_names("ray_x_seconds_bucket") == {"ray_x_seconds_bucket", "ray_x_seconds"}
    assert base_names("g") == {"g"}


def test_the_dashboard_has_the_panels_the_issue_asks_for():
    names = dashboard_metrics()
    for wanted in (
        "ray_turnout_requests_total",                      # requests and errors by model and route
        "ray_turnout_fallbacks_total",                     # fallbacks by reason
        "ray_turnout_time_to_first_token_seconds_bucket",  # TTFT percentiles
        "ray_turnout_request_latency_seconds_bucket",      # latency percentiles
        "ray_turnout_tokens_total",                        # tokens/s
        "ray_vllm_generation_tokens_total",
        "ray_vllm_kv_cache_usage_perc",                    # KV-cache use
        "ray_vllm_num_requests_waiting",                   # queue depth
        "ray_turnout_circuit_state",                       # circuit states
        "ray_serve_num_http_requests_total",
        "ray_turnout_response_cache_requests_total",       # response cache hits and misses
        "ray_turnout_response_cache_bytes",                # its size
        "ray_turnout_affinity_decisions_total",            # prefix affinity hits
        "ray_turnout_affinity_imbalance",                  # and the imbalance it allows
        "ray_vllm_prefix_cache_hits_total",
    ):
        assert wanted in names


def test_every_dashboard_metric_is_registered_by_turnout_vllm_or_serve():
    exported = _turnout_names() | _routing_names() | _vllm_names() | _serve_names()
    unknown = sorted(n for n in dashboard_metrics() if n not in exported)
    assert not unknown, f"no such metric: {unknown}"


def _exported(name: str, kind: str) -> set[str]:
    kind = kind.lower()
    if kind == "counter":
        return {name if name.endswith("_total") else f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def _turnout_names() -> set[str]:
    created: list[tuple[str, str]] = []

    def recorder(kind: str):
        return lambda name, **_: created.append((name, kind))

    Metrics(counter=recorder("counter"), histogram=recorder("histogram"), gauge=recorder("gauge"))
    return {n for name, kind in created for n in _exported(f"ray_{name}", kind)}


def _routing_names() -> set[str]:
    """The prefix-affinity router's own metrics (service/serve_overrides/request_router.py)."""
    text = (Path(__file__).resolve().parents[2] / "service" / "serve_overrides" / "request_router.py").read_text()
    found = re.findall(r'ray_metrics\.(Counter|Gauge|Histogram)\(\s*"(turnout_\w+)"', text)
    assert found
    return {n for kind, name in found for n in _exported(f"ray_{name}", kind)}


def _source(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0])


def _vllm_names() -> set[str]:
    text = (_source("vllm") / "v1" / "metrics" / "loggers.py").read_text()
    found = re.findall(r'self\._(counter|gauge|histogram)_cls\(\s*name="vllm:(\w+)"', text)
    return {n for kind, name in found for n in _exported(f"ray_vllm_{name}", kind)}


def _serve_names() -> set[str]:
    found = []
    for path in (_source("ray") / "serve" / "_private").glob("*.py"):
        found += re.findall(r'metrics\.(Counter|Gauge|Histogram)\(\s*(?:name=)?f?"(serve_[\w{}]+)"', path.read_text())
    return {n for kind, name in found for n in _exported(f"ray_{name.replace('{protocol_name}', 'http')}", kind)}
