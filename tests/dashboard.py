"""The Grafana dashboard's metric names, and the sample names of a Prometheus scrape.

Names are compared as Prometheus samples, suffix included: a histogram panel queries
``X_bucket`` and the scrape has ``X_bucket{...}`` lines, a counter panel queries ``X_total``. So
no suffix is stripped for the scrape check; :func:`base_names` strips them only to find the
name a metric was registered under.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "helm" / "turnout" / "dashboards" / "turnout.json"

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSETS = re.compile(r"(?:\boffset\b|@)\s*[^\s)]+")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan"}
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,")
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)[\s{]")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")
# Exported only by a graph with the response cache on and a model with routing: prefix_affinity
# (tests/e2e/test_caching.py); the session's demo graph has neither.
CACHING_METRICS = frozenset({
    "ray_turnout_response_cache_requests_total", "ray_turnout_response_cache_bytes",
    "ray_turnout_response_cache_entries", "ray_turnout_affinity_decisions_total",
    "ray_turnout_affinity_imbalance",
})


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = _STRINGS.sub('""', expr)
    while _MATCHERS.search(text):
        text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", _OFFSETS.sub(" ", _RANGES.sub(" ", text)))
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def dashboard_metrics(path: Path = DASHBOARD) -> set[str]:
    """Every metric the dashboard queries: panel targets and templating variables."""
    dashboard = json.loads(path.read_text())
    names: set[str] = set()
    for expr in _expressions(dashboard):
        found = _LABEL_VALUES.findall(expr)
        names |= set(found) if found else promql_metrics(expr)
    return names


def scraped_names(text: str) -> set[str]:
    """The sample names in Prometheus text exposition (comments skipped)."""
    return {m.group(1) for line in text.splitlines() if (m := _SAMPLE.match(line))}


def base_names(name: str) -> set[str]:
    """``name`` and what it may have been registered as before Prometheus added a suffix."""
    return {name} | {name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)}


def _expressions(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            # A query variable's "query" is PromQL; a datasource variable's is a plugin name.
            promql = key in ("expr", "definition") or (key == "query" and node.get("type") == "query")
            if promql and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)
