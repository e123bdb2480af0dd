"""Recorders for unit tests: metric classes that keep every call, and a clock moved by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.metrics import Metrics


class FakeMetric:
    """Records ``inc``, ``observe`` and ``set`` calls as ``(method, value, tags)``."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options
        self.calls: list[tuple[str, float, dict[str, str]]] = []

    def inc(self, value: float = 1, tags: Mapping[str, str] | None = None) -> None:
        self.calls.append(("inc", value, dict(tags or {})))

    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        self.calls.append(("observe", value, dict(tags or {})))

    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        self.calls.append(("set", value, dict(tags or {})))


class MetricRecorder:
    """Metric classes for :class:`Metrics` that keep every metric they create, by name."""

    def __init__(self) -> None:
        self.by_name: dict[str, FakeMetric] = {}

    def make(self, name: str, **options: Any) -> FakeMetric:
        metric = FakeMetric(name, **options)
        self.by_name[name] = metric
        return metric

    def metrics(self) -> Metrics:
        return Metrics(counter=self.make, histogram=self.make, gauge=self.make)

    def tags(self, name: str) -> list[dict[str, str]]:
        return [tags for _, _, tags in self.by_name[name].calls]

    def calls(self, name: str) -> list[tuple[str, float, dict[str, str]]]:
        return self.by_name[name].calls


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
